"""What a person sees of a run's progress: one line redrawn in place on a terminal (checked through a real
pseudo-terminal), a line every interval in a log file, nothing under --quiet."""

import io
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from diffgen.jobs.cli import configure_logging
from diffgen.pipelines.progress import Progress
from tests.conftest import REPO, write_job, write_manifest


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clean_logging():
    root, progress = logging.getLogger(), logging.getLogger("diffgen.progress")
    saved = (root.handlers[:], root.level, progress.handlers[:], progress.level, progress.propagate)
    root.handlers = []
    yield
    root.handlers, root.level = saved[0], saved[1]
    progress.handlers, progress.level, progress.propagate = saved[2], saved[3], saved[4]


def _run_progress(stream, **logging_args) -> None:
    shared = configure_logging(stream=stream, **logging_args)
    # pytest's own log handlers are on the root logger, so basicConfig added none: the CLI's handler, as it would.
    handler = logging.StreamHandler(shared)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger, level = logging.getLogger("diffgen"), logging.getLogger("diffgen").level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    now = [0.0]
    progress = Progress(4, already=0, interval_s=10.0, clock=lambda: now[0])
    import pyarrow as pa

    from diffgen.pipelines.progress import status_counts

    for t in (1.0, 2.0):
        now[0] = t
        progress.add(status_counts(pa.table({"status": ["written"]})))
    logging.getLogger("diffgen").info("a log line")
    now[0] = 12.0
    progress.add(status_counts(pa.table({"status": ["written", "rejected"]})))
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_terminal_gets_one_line_redrawn_in_place(clean_logging):
    terminal = _Terminal()
    _run_progress(terminal, verbose=False)
    text = terminal.getvalue()
    assert "\r\x1b[2K1/4 images written (25 %)" in text and "\r\x1b[2K2/4 images written (50 %)" in text
    assert "\r\x1b[2K" + text.split("\r\x1b[2K")[-1] == "\r\x1b[2K3/4 images written (75 %), 1 rejected, 0 failed, " \
        "0.25 images/s, ETA 0:04"  # the line last drawn: nothing after it
    assert re.search(r"\r\x1b\[2K\d{4}-\d\d-\d\d [^\r\n]* INFO diffgen: a log line\n", text)  # cleared first


def test_a_log_file_gets_the_periodic_lines_and_quiet_gets_none(clean_logging):
    log_file = io.StringIO()
    _run_progress(log_file, verbose=False)
    lines = [line for line in log_file.getvalue().splitlines() if "progress" in line]
    assert len(lines) == 1 and "INFO diffgen.progress: progress: 3/4 images written (75 %), 1 rejected" in lines[0]
    assert "\r" not in log_file.getvalue()
    quiet = io.StringIO()
    logging.getLogger().handlers = []
    _run_progress(quiet, verbose=False, level="warning")
    assert "images written" not in quiet.getvalue()


def _read_until_exit(fd: int, process: subprocess.Popen, limit_s: float) -> bytes:
    output, deadline = b"", time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    return output


def test_a_run_in_a_terminal_shows_its_progress_line(ray_cluster, tmp_path, tiny_sd):
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": f"r{i}", "prompt": f"prompt {i}"} for i in range(6)])
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), sampler={"steps": 2})
    main, follower = pty.openpty()
    env = {**os.environ, "RAY_ADDRESS": ray_cluster, "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "diffgen.jobs.cli", "run", str(job), "--output",
                                str(tmp_path / "out")], stdin=follower, stdout=subprocess.PIPE, stderr=follower,
                               cwd=REPO, env=env)  # fmt: skip
    os.close(follower)
    try:
        shown = _read_until_exit(main, process, 300).decode("utf-8", "replace")
        summary = json.loads(process.communicate(timeout=60)[0])
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and summary["counts"]["images_written"] == 6, shown[-3000:]
    assert "\r\x1b[2K6/6 images written (100 %), 0 rejected, 0 failed" in shown, shown[-3000:]
    assert "Total Progress" not in shown and "Mutex" not in shown and "Fatal Python error" not in shown, shown[-3000:]
