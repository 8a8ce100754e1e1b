"""The run's progress: the counts the writers return per batch, a rate and an ETA, logged at two levels."""

import logging

import pyarrow as pa

from diffgen.pipelines.progress import Progress, status_counts


def _batch(*statuses: str) -> pa.Table:
    return status_counts(pa.table({"status": list(statuses)}))


def test_a_batch_is_one_row_of_counts_per_status():
    counts = status_counts(pa.table({"status": ["written", "failed", "written", "rejected", "written"]}))
    assert counts.to_pylist() == [{"written": 3, "rejected": 1, "failed": 1}]
    assert status_counts(pa.table({"status": pa.array([], pa.string())})).to_pylist() == [
        {"written": 0, "rejected": 0, "failed": 0}
    ]


def test_counts_rate_eta_and_the_periodic_info_line(caplog):
    now = [100.0]
    progress = Progress(10, already=2, interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="diffgen.progress"):
        now[0] = 102.0
        progress.add(_batch("written", "written", "rejected", "failed"))
        snapshot = progress.snapshot()
        assert (snapshot.written, snapshot.expected, snapshot.rejected, snapshot.failed) == (4, 10, 1, 1)
        assert snapshot.rate == 1.0 and snapshot.eta_s == 6.0
        assert snapshot.line() == "4/10 images written (40 %), 1 rejected, 1 failed, 1.00 images/s, ETA 0:06"
        now[0] = 111.0
        progress.add(_batch("written"))
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.INFO]
    assert caplog.records[-1].getMessage().startswith("progress: 5/10 images written (50 %)")
    assert Progress(3, already=3).snapshot().line().startswith("3/3 images written (100 %)")
