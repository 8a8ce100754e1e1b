"""A lease on an output, so that two runs into the same output do not redo each other's work.

A run holds its output's lease while it writes. The lease is a short chain of small JSON objects in the
output's root, `.diffgen-lease-<epoch>.json`: the highest epoch is the lease, and its record names the
holder (run id, host, pid, a random token, when it started) and its last heartbeat.

Every change is an exclusive create of the next epoch (`storage.create_exclusive`): taking a free or
stale lease, and every heartbeat. Of the runs that try the same epoch exactly one creates it, so two
takeovers, or a takeover and the holder's heartbeat, cannot both succeed; each side then reads the
newest epoch back and holds the lease only if it carries its own token (which also catches an S3 PUT
that was retried after its response was lost). Nothing is ever overwritten. The holder deletes the
epochs below its own after each heartbeat, and its own at release, only while the newest epoch is
still its own; a newer epoch is never deleted, so a release cannot remove someone else's lease.

What this does not guarantee:

- It is only as strong as the store's exclusive create. A local disk (hard link) and S3
  (`If-None-Match: *`) are atomic. moto's server, used by the tests, checks and then writes in one
  request handler without a lock; in 200 four-way races on it exactly one writer won each time. On
  fsspec filesystems that check for the name and then write, the read-back does not close the race:
  a run whose check and write straddle the other's write and read-back wins too (with a store made to
  check and then write, two threads racing here both won in most rounds). There the lease is advisory.
- Staleness compares the holder's wall clock (its heartbeat time) with the taker's: clock skew between
  hosts shortens or lengthens the limit by the skew. Keep `stale_s` far above it.
- A lease is not a fence. A takeover happens only after the holder went `stale_s` without a heartbeat
  (a suspended process, a network partition); when it resumes it learns of the takeover at its next
  heartbeat, up to `heartbeat_s` later, and until then both runs may write. Output names are
  deterministic, so the overlap repeats work instead of corrupting it. A holder that cannot confirm a
  heartbeat for `stale_s` (store errors, a starved thread) fails `Lease.check()`, since by then another
  run may rightly have taken over.
- Epochs restart at 1 after a release. A holder frozen between reading the newest epoch and creating
  the next while another run takes over, finishes, releases and a third starts could create an epoch
  above the third run's; the third run then finds itself lost at its next heartbeat, so still only
  one run goes on holding the lease.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from diffgen.dataset import storage
from diffgen.dataset.layout import LEASE_PREFIX, lease_file

logger = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_S = 120.0

_NAME = re.compile(re.escape(LEASE_PREFIX) + r"(\d+)\.json")
# Reads that may find the newest lease file just deleted by its holder's next heartbeat, or attempts
# that may lose the create of an epoch to another run: a few, never a loop without end.
_ROUNDS = 8


@dataclass(frozen=True)
class LeaseHolder:
    """One lease record: who holds (or held) an output, since when, and its last heartbeat."""

    run_id: str
    host: str
    pid: int
    token: str
    started: float  # Unix time
    heartbeat: float  # Unix time, on the holder's clock
    heartbeat_s: float
    stale_s: float  # the holder's promise: a heartbeat at least this often, or the lease may be taken
    epoch: int
    boot_id: str | None = None  # the holder machine's boot id (Linux), so a pid is only read on the same boot

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat (0 when the holder's clock is ahead)."""
        return max(0.0, (time.time() if now is None else now) - self.heartbeat)

    def is_stale(self, now: float | None = None) -> bool:
        """No heartbeat for `stale_s`, or a holder on this very machine whose process is gone (a killed
        driver's lease need not be waited out: crash-and-resume works at once)."""
        return self.age_s(now) > self.stale_s or self.died_here()

    def died_here(self) -> bool:
        """The holder ran on this host since its last boot and its process no longer exists."""
        if self.host != socket.gethostname() or self.boot_id is None or self.boot_id != _boot_id():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, under another user
            return False
        return False

    def describe(self, now: float | None = None) -> str:
        since = datetime.fromtimestamp(self.started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"run {self.run_id!r} (host {self.host}, pid {self.pid}) since {since}, "
                f"last heartbeat {self.age_s(now):.0f} s ago")  # fmt: skip


class LeaseHeldError(RuntimeError):
    """Another live run holds the output's lease."""

    def __init__(self, output: str, holder: LeaseHolder):
        super().__init__(
            f"output {output} is in use by {holder.describe()}; wait for it to finish, or if that run is dead, "
            f"the lease is taken over after {holder.stale_s:g} s without a heartbeat"
        )
        self.output = output
        self.holder = holder


class LeaseLostError(RuntimeError):
    """This run's lease was taken over, or its heartbeat could not be confirmed within the staleness limit."""


def read_lease_holder(output: str) -> LeaseHolder | None:
    """The output's newest lease record, live or stale (`is_stale()`); None when no run holds it."""
    return _newest(output)[0]


def _newest(output: str) -> tuple[LeaseHolder | None, dict[int, str]]:
    """The newest lease record and all lease files by epoch."""
    problem: Exception | None = None
    for _ in range(_ROUNDS):
        files = _lease_files(output)
        if not files:
            return None, files
        epoch = max(files)
        try:
            return _decode(storage.read_bytes(files[epoch]), epoch), files
        except FileNotFoundError:
            continue  # its holder moved on to the next epoch between the listing and the read
        except (ValueError, KeyError, TypeError) as e:
            problem = e  # half written, on a filesystem without atomic creates; look again shortly
            time.sleep(0.05)
    raise RuntimeError(f"output {output}: cannot read its lease file(s) {sorted(_lease_files(output).values())} "
                       f"({problem or 'they keep changing'}); if no run is using the output, delete them")  # fmt: skip


class Lease:
    """A held lease. A daemon thread renews its heartbeat every `heartbeat_s` until `release()`; if it
    finds the lease taken over, it stops and sets `lost` (`lost_reason` says by whom)."""

    def __init__(self, output: str, holder: LeaseHolder, files: dict[int, str]):
        self.output = output
        self.holder = holder  # our newest confirmed record
        self.lost_reason: str | None = None
        self._confirmed = time.monotonic()
        self._released = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"diffgen-lease-{holder.run_id}", daemon=True)
        self._thread.start()
        try:
            _delete_below(holder.epoch, files)
        except OSError as e:  # the lease is ours all the same; each heartbeat deletes what is older
            logger.warning("output %s: could not delete old lease files yet (%s)", output, e)

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def check(self) -> None:
        """Raise `LeaseLostError` unless the lease is still ours as far as can be known."""
        if self.lost_reason is not None:
            raise LeaseLostError(f"output {self.output}: the lease was lost: {self.lost_reason}")
        unconfirmed = time.monotonic() - self._confirmed
        if unconfirmed >= self.holder.stale_s:
            raise LeaseLostError(
                f"output {self.output}: no heartbeat confirmed for {unconfirmed:.0f} s "
                f"(stale after {self.holder.stale_s:g} s); another run may have taken it over"
            )

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours. A failure is logged, not raised:
        the lease then goes stale and the next run takes it over."""
        if self._released:
            return
        self._released = True
        self._stop.set()
        self._thread.join()
        if self.lost:
            return
        try:
            current, files = _newest(self.output)
            if current is None or current.token != self.holder.token:
                self._lose(_gone(current))
                return
            _delete_below(current.epoch, files)
            storage.delete(files[current.epoch])
        except Exception as e:  # noqa: BLE001 - a failed release must not hide the run's own outcome
            logger.warning("output %s: could not release the lease (%s); it is taken over after %g s",
                           self.output, e, self.holder.stale_s)  # fmt: skip

    def _renew(self) -> None:
        while not self._stop.wait(self.holder.heartbeat_s) and not self.lost:
            try:
                self._beat()
            except Exception as e:  # noqa: BLE001 - a thread that died silently would let the lease go stale
                unconfirmed = time.monotonic() - self._confirmed
                if unconfirmed >= self.holder.stale_s:
                    self._lose(f"no heartbeat confirmed for {unconfirmed:.0f} s (last error: {e})")
                else:
                    logger.warning("output %s: lease heartbeat failed (%s); retrying in %g s",
                                   self.output, e, self.holder.heartbeat_s)  # fmt: skip

    def _beat(self) -> None:
        current, _ = _newest(self.output)
        if current is None or current.token != self.holder.token:
            self._lose(_gone(current))
            return
        sent = time.monotonic()
        renewed = dataclasses.replace(current, heartbeat=time.time(), epoch=current.epoch + 1)
        storage.create_exclusive(_lease_uri(self.output, renewed.epoch), _encode(renewed))
        after, files = _newest(self.output)
        if after is None or after.token != self.holder.token:
            self._lose(_gone(after))
            return
        self.holder, self._confirmed = after, sent
        _delete_below(after.epoch, files)

    def _lose(self, reason: str) -> None:
        self.lost_reason = reason
        logger.warning("output %s: run %r lost its lease: %s", self.output, self.holder.run_id, reason)


def acquire_lease(output: str, run_id: str, *, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> Lease:
    """Take the output's lease, or raise `LeaseHeldError` naming the live run that holds it.

    A stale lease (no heartbeat for its holder's `stale_s`) is taken over with a warning naming the
    old holder. Call `release()` when done, or use `hold_lease`.
    """
    if not (heartbeat_s > 0 and stale_s >= 2 * heartbeat_s):
        raise ValueError(f"lease: stale_s must be at least twice heartbeat_s (> 0), "
                         f"got heartbeat_s={heartbeat_s}, stale_s={stale_s}")  # fmt: skip
    now = time.time()
    mine = LeaseHolder(run_id, socket.gethostname(), os.getpid(), secrets.token_hex(16), now, now,
                       float(heartbeat_s), float(stale_s), epoch=0, boot_id=_boot_id())  # fmt: skip
    replaced: LeaseHolder | None = None
    for _ in range(_ROUNDS):
        current, files = _newest(output)
        if current is not None and current.token == mine.token:
            if replaced is not None:
                why = "its process is gone" if replaced.died_here() else f"no heartbeat for {replaced.stale_s:g} s"
                logger.warning("output %s: took over the lease of %s (%s); that run is presumed dead",
                               output, replaced.describe(), why)  # fmt: skip
            return Lease(output, current, files)
        if current is not None and not current.is_stale():
            raise LeaseHeldError(output, current)
        replaced = current
        attempt = dataclasses.replace(mine, heartbeat=time.time(), epoch=current.epoch + 1 if current else 1)
        storage.create_exclusive(_lease_uri(output, attempt.epoch), _encode(attempt))
    raise RuntimeError(f"output {output}: could not take the lease in {_ROUNDS} attempts; other runs keep changing it")


@contextmanager
def hold_lease(
    output: str, run_id: str, *, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S
) -> Iterator[Lease]:
    """`with hold_lease(output, run_id) as lease:` holds the output's lease for the block (see `acquire_lease`);
    check `lease.lost` or call `lease.check()` before work that must not overlap another run."""
    lease = acquire_lease(output, run_id, heartbeat_s=heartbeat_s, stale_s=stale_s)
    try:
        yield lease
    finally:
        lease.release()


def _lease_uri(output: str, epoch: int) -> str:
    return storage.join(output, lease_file(epoch))


def _lease_files(output: str) -> dict[int, str]:
    found = {}
    for uri in storage.list_files(output, ".json"):
        if match := _NAME.fullmatch(uri.rsplit("/", 1)[-1]):
            found[int(match.group(1))] = _lease_uri(output, int(match.group(1)))
    return found


def _delete_below(epoch: int, files: dict[int, str]) -> None:
    """Delete older lease files: earlier heartbeats, a dead holder's, runs that lost a race."""
    for old, uri in files.items():
        if old < epoch:
            storage.delete(uri)


def _encode(holder: LeaseHolder) -> bytes:
    record = dataclasses.asdict(holder)
    del record["epoch"]  # the file's name holds it
    return json.dumps(record).encode()


def _decode(data: bytes, epoch: int) -> LeaseHolder:
    record = json.loads(data)
    return LeaseHolder(
        run_id=str(record["run_id"]), host=str(record["host"]), pid=int(record["pid"]), token=str(record["token"]),
        started=float(record["started"]), heartbeat=float(record["heartbeat"]),
        heartbeat_s=float(record["heartbeat_s"]), stale_s=float(record["stale_s"]), epoch=epoch,
        boot_id=record.get("boot_id"),
    )  # fmt: skip


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _gone(current: LeaseHolder | None) -> str:
    return "its lease file was deleted" if current is None else f"taken over by {current.describe()}"
