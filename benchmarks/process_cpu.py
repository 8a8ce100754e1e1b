"""CPU seconds per process role on this machine while a pipeline variant runs (Linux /proc)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

# (text in the process's title, role); the first that matches names the role.
ROLES = (
    ("_GenerateActor", "generate actors"),
    ("QcActor", "qc actor"),
    ("WriteActor", "write actors"),
    ("StatsSink", "qc stats sink"),
    # Ray Data's own helper actors, the largest of the overhead outside the stages on 2 cores.
    ("_StatsActor", "ray data stats actor"),
    ("_AutoscalingCoordinatorActor", "ray data autoscaling coordinator"),
    ("ActorLocationTracker", "ray data actor location tracker"),
    ("dashboard/agent.py", "dashboard agent"),
    ("log_monitor.py", "log monitor"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs server"),
    ("ray::IDLE", "idle ray workers"),
)


class ProcessCpu:
    """utime + stime from /proc/<pid>/stat, sampled every second so that processes which exit before the
    end still count. A process's role is read from its title (Ray names its workers after the actor or
    task they run); a worker that ran tasks of several kinds counts under the last one."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.driver = os.getpid()
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.started = time.perf_counter()
        self._sample(first=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
            if first:
                self.first[pid] = seconds
            # An exiting process reads an empty title, an idle Ray worker "ray::IDLE" between tasks:
            # keep the last title that named what the process did.
            known = self.last.get(pid, ("", 0.0))[0]
            if not title.strip() or ("ray::IDLE" in title and known):
                title = known
            self.last[pid] = (title, seconds)

    def _run(self) -> None:
        # Every second: the sampler runs in the driver, and reading ~90 processes twice a second took
        # a quarter of the driver's CPU (py-spy) on 2 cores.
        while not self._stop.wait(1.0):
            self._sample()

    def _role(self, pid: int, title: str) -> str:
        if pid == self.driver:
            return "driver (Ray Data executor)"
        for key, role in ROLES:
            if key in title:
                return role
        return "other ray processes" if "ray" in title else "other processes"

    def stop(self) -> dict:
        """Stops sampling; wall and CPU seconds, cores busy, and CPU seconds by role (largest first)."""
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.perf_counter() - self.started
        by_role: Counter = Counter()
        for pid, (title, seconds) in self.last.items():
            by_role[self._role(pid, title)] += seconds - self.first.get(pid, 0.0)
        total = sum(by_role.values())
        return {
            "wall_s": round(wall, 2),
            "cpu_s": round(total, 2),
            "cores_busy": round(total / wall, 3) if wall else None,
            "cpu_s_by_role": {k: round(v, 2) for k, v in by_role.most_common() if v >= 0.05},
        }
