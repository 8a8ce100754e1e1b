"""The output lease on a real local disk and a real S3 endpoint (moto's server on loopback)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time

import pytest

from diffgen.dataset import storage
from diffgen.dataset.lease import (
    LeaseHeldError,
    LeaseLostError,
    acquire_lease,
    hold_lease,
    read_lease_holder,
)


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("s3_bucket") + "/out"


def plant(output: str, epoch: int, *, run_id: str = "other", heartbeat_age: float = 0.0, **holder) -> None:
    """Another run's lease record, written as that run would have."""
    now = time.time()
    record = {
        "run_id": run_id, "host": "elsewhere", "pid": 4242, "token": f"token-of-{run_id}",
        "started": now - 3600, "heartbeat": now - heartbeat_age, "heartbeat_s": 30.0, "stale_s": 120.0, **holder,
    }  # fmt: skip
    storage.write_bytes(storage.join(output, f".diffgen-lease-{epoch:012d}.json"), json.dumps(record).encode())


def lease_files(output: str) -> list[str]:
    return [uri.rsplit("/", 1)[-1] for uri in storage.list_files(output) if "/.diffgen-lease-" in uri]


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_create_exclusive_creates_once(output: str):
    uri = storage.join(output, "marker.json")
    assert storage.create_exclusive(uri, b"first") is True
    assert storage.create_exclusive(uri, b"second") is False
    assert storage.read_bytes(uri) == b"first"
    assert [u.rsplit("/", 1)[-1] for u in storage.list_files(output)] == ["marker.json"]  # no temporary left


def test_acquire_names_this_run_and_release_removes_it(output: str):
    with hold_lease(output, "run-a", heartbeat_s=60, stale_s=120) as lease:
        holder = read_lease_holder(output)
        assert (holder.run_id, holder.host, holder.pid) == ("run-a", socket.gethostname(), os.getpid())
        assert holder.token == lease.holder.token and not holder.is_stale()
    assert read_lease_holder(output) is None
    assert lease_files(output) == []
    assert not lease.lost


def test_second_run_is_refused_naming_the_holder(output: str):
    with hold_lease(output, "run-a", heartbeat_s=60, stale_s=120) as lease:
        with pytest.raises(LeaseHeldError) as refused:
            acquire_lease(output, "run-b")
        message = str(refused.value)
        assert message.startswith(f"output {output} is in use by run 'run-a' (host {socket.gethostname()}, "
                                  f"pid {os.getpid()}) since ")  # fmt: skip
        assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, last heartbeat \d+ s ago; ", message)
        assert message.endswith("the lease is taken over after 120 s without a heartbeat")
        assert refused.value.holder.token == lease.holder.token
        assert read_lease_holder(output).token == lease.holder.token  # the refused run changed nothing


def test_stale_lease_is_taken_over_with_a_warning(output: str, caplog: pytest.LogCaptureFixture):
    plant(output, 7, run_id="dead-run", heartbeat_age=1000)
    with caplog.at_level(logging.WARNING, logger="diffgen.dataset.lease"):
        with hold_lease(output, "run-b", heartbeat_s=60, stale_s=120) as lease:
            assert read_lease_holder(output).token == lease.holder.token
            assert lease.holder.epoch == 8
            assert lease_files(output) == [".diffgen-lease-000000000008.json"]  # the dead run's file is gone
    assert "took over the lease of run 'dead-run' (host elsewhere, pid 4242)" in caplog.text
    assert "last heartbeat 1000 s ago" in caplog.text


def test_a_lease_whose_process_died_on_this_machine_is_taken_over_at_once(output: str, caplog):
    """A killed driver's re-run need not wait out the staleness limit: same host, same boot, no such pid."""
    import subprocess
    import sys

    from diffgen.dataset.lease import _boot_id

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {"host": socket.gethostname(), "boot_id": _boot_id()}
    plant(output, 2, run_id="killed", heartbeat_age=1, pid=gone.pid, **here)
    with caplog.at_level(logging.WARNING, logger="diffgen.dataset.lease"):
        with hold_lease(output, "rerun", heartbeat_s=60, stale_s=120) as lease:
            assert lease.holder.epoch == 3
    assert "took over the lease of run 'killed'" in caplog.text and "its process is gone" in caplog.text
    plant(output, 5, run_id="alive", heartbeat_age=1, pid=os.getpid(), **here)  # this very process: alive
    with pytest.raises(LeaseHeldError, match="run 'alive'"):
        acquire_lease(output, "rerun")


def test_live_lease_is_not_taken_over(output: str):
    plant(output, 3, run_id="slow-run", heartbeat_age=100)  # within its 120 s
    with pytest.raises(LeaseHeldError, match="run 'slow-run' .* last heartbeat 100 s ago"):
        acquire_lease(output, "run-b")


def test_heartbeat_renews_the_lease(output: str):
    with hold_lease(output, "run-a", heartbeat_s=0.2, stale_s=5) as lease:
        first = read_lease_holder(output)
        wait_for(lambda: read_lease_holder(output).epoch > first.epoch)
        now = read_lease_holder(output)
        assert now.token == first.token and now.started == first.started
        assert now.heartbeat > first.heartbeat
        assert len(lease_files(output)) <= 2  # the newest, and the previous until it is deleted
        lease.check()
    assert not lease.lost and lease_files(output) == []


def test_release_keeps_a_newer_holders_lease(output: str, caplog: pytest.LogCaptureFixture):
    lease = acquire_lease(output, "run-a", heartbeat_s=60, stale_s=120)
    plant(output, lease.holder.epoch + 1, run_id="run-b")  # run-b took over while run-a looked stale
    with caplog.at_level(logging.WARNING, logger="diffgen.dataset.lease"):
        lease.release()
    assert read_lease_holder(output).run_id == "run-b"
    assert f".diffgen-lease-{lease.holder.epoch + 1:012d}.json" in lease_files(output)
    assert lease.lost and "taken over by run 'run-b'" in caplog.text


def test_heartbeat_detects_a_lost_lease(output: str):
    lease = acquire_lease(output, "run-a", heartbeat_s=0.2, stale_s=5)
    taken = lease.holder.epoch + 1
    plant(output, taken, run_id="run-b")
    wait_for(lambda: lease.lost)
    assert lease.lost_reason.startswith("taken over by run 'run-b' (host elsewhere, pid 4242)")
    with pytest.raises(LeaseLostError, match="run 'run-b'"):
        lease.check()
    lease.release()
    assert read_lease_holder(output).epoch == taken and read_lease_holder(output).run_id == "run-b"


def race(output: str, runs: int) -> tuple[list, list[LeaseHeldError]]:
    """`runs` threads acquire `output` at once: (leases won, refusals)."""
    start = threading.Barrier(runs)
    won, refused = [], []

    def take(n: int) -> None:
        start.wait()
        try:
            won.append(acquire_lease(output, f"run-{n}", heartbeat_s=60, stale_s=120))
        except LeaseHeldError as e:
            refused.append(e)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, refused


# A local race is cheap and real: with creates made non-atomic (check, then write), two winners came up in
# most rounds, and in a quarter of them with plain overwrites read back. On S3 each round costs ~20 requests.
def rounds(output: str) -> int:
    return 6 if output.startswith("s3://") else 20


def test_racing_runs_on_a_free_output_have_one_winner(output: str):
    for attempt in range(rounds(output)):
        out = storage.join(output, f"race-{attempt}")
        won, refused = race(out, 2)
        assert (len(won), len(refused)) == (1, 1), attempt
        assert read_lease_holder(out).token == won[0].holder.token
        assert refused[0].holder.token == won[0].holder.token
        won[0].release()


def test_racing_takeovers_of_a_stale_lease_have_one_winner(output: str):
    for attempt in range(rounds(output) // 2):
        out = storage.join(output, f"race-{attempt}")
        plant(out, 1, run_id="dead-run", heartbeat_age=1000)
        won, refused = race(out, 2)
        assert (len(won), len(refused)) == (1, 1), attempt
        assert read_lease_holder(out).token == won[0].holder.token
        won[0].release()


def test_staleness_limit_must_leave_room_for_a_missed_heartbeat(tmp_path):
    with pytest.raises(ValueError, match="stale_s must be at least twice heartbeat_s"):
        acquire_lease(str(tmp_path), "run-a", heartbeat_s=30, stale_s=45)
