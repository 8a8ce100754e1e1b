"""A run's progress as the driver sees it: the counts every writer batch returns are added up.

Writers return one row of counts per batch (`status_counts`), not the index rows: at 10 million images
the index rows (provenance JSON included, ~2 KB each) would all pass through the driver.

`Progress` logs to `diffgen.progress`: a DEBUG record per batch (what a terminal's live line redraws from)
and an INFO record at most every `interval_s` and at the end of each round (what a log file gets). Whoever
configures logging decides what to show; `diffgen.jobs.cli` draws one updating line on a terminal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from diffgen.schemas.record import RecordStatus

log = logging.getLogger("diffgen.progress")


@dataclass
class Snapshot:
    """What a progress line says."""

    written: int  # slots filled, including those committed by earlier runs
    expected: int  # slots the run must settle
    rejected: int  # attempts rejected so far in this run (most are replaced)
    failed: int  # attempts failed so far in this run
    rate: float  # images written per second in this run
    eta_s: float | None  # seconds left at that rate; None before the first image

    def line(self) -> str:
        share = 100.0 * self.written / self.expected if self.expected else 100.0
        eta = "-" if self.eta_s is None else _clock(self.eta_s)
        return (f"{self.written}/{self.expected} images written ({share:.0f} %), {self.rejected} rejected, "
                f"{self.failed} failed, {self.rate:.2f} images/s, ETA {eta}")  # fmt: skip


class Progress:
    def __init__(self, expected: int, already: int, *, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.expected, self.already, self.interval_s, self.clock = expected, already, interval_s, clock
        self.written = self.rejected = self.failed = 0
        self.started = clock()
        self._logged = self.started

    def add(self, counts: pa.Table) -> None:
        """Add rows of `status_counts`; log the line (INFO when `interval_s` has passed since the last)."""
        counted = {s: pc.sum(counts.column(s.value)).as_py() or 0 for s in RecordStatus}
        self.written += counted[RecordStatus.WRITTEN]
        self.rejected += counted[RecordStatus.REJECTED]
        self.failed += counted[RecordStatus.FAILED]
        now = self.clock()
        level = logging.INFO if now - self._logged >= self.interval_s else logging.DEBUG
        if level == logging.INFO:
            self._logged = now
        self.emit(level)

    def emit(self, level: int = logging.INFO) -> None:
        snapshot = self.snapshot()
        log.log(level, "progress: %s", snapshot.line(), extra={"progress": snapshot})

    def snapshot(self) -> Snapshot:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.written / elapsed
        done = min(self.already + self.written, self.expected)
        eta = (self.expected - done) / rate if rate > 0 else None
        return Snapshot(done, self.expected, self.rejected, self.failed, rate, eta)


def status_counts(index: pa.Table) -> pa.Table:
    """One row: how many of the index rows in `index` have each `RecordStatus` (a column per status)."""
    status = index.column("status")
    return pa.table({s.value: pa.array([pc.sum(pc.equal(status, s.value)).as_py() or 0], pa.int64())
                     for s in RecordStatus})  # fmt: skip


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
