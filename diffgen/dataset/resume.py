"""Resume: which images an output already holds, made from the very inputs this run asks for.

A slot (one image a manifest row asks for) is made in attempts: attempt 0 with the slot's seed, then,
when an attempt is rejected by QC or fails in a way another seed can avoid (`replaceable`), attempt 1,
2, ... with seeds derived from it, until one is written or `policy.max_attempts` is reached.

An attempt is settled when the index has a row for it whose `fingerprint` (`diffgen.dataset.fingerprint`)
equals the one the job and manifest give now, whose input images (init, mask, control) still have the
sha256 recorded beside their URIs, and whose status decides it (written, rejected, or a replaceable
failure). A settled attempt whose inputs differ is *changed*: by default the run refuses
(`ChangedRecordsError`, naming how many and one example field), because skipping it would keep an
image of other inputs under this run's name; `policy.changed_records: overwrite` (`--overwrite-changed`)
makes the slot again from attempt 0. A transient failure (a store that was down) is tried again with
the same seed on the next run.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diffgen.dataset import storage
from diffgen.dataset.fingerprint import RECORD_FIELDS
from diffgen.dataset.records import attempts_of
from diffgen.schemas.record import RecordStatus

_COMMITTED = (RecordStatus.WRITTEN.value, RecordStatus.REJECTED.value)
_INPUT_IMAGES = (
    ("init_image", "init_image_sha256"), ("mask_image", "mask_image_sha256"),
    ("ip_adapter_image", "ip_adapter_image_sha256"),
)  # fmt: skip


class ChangedRecordsError(ValueError):
    """Committed records of the output were made from other inputs than the run asks for."""


@dataclass(frozen=True)
class Change:
    record_id: str
    row_id: str
    sample_index: int
    field: str
    was: object
    now: object

    def describe(self) -> str:
        return (f"record {self.record_id} (id {self.row_id[:60]!r}, sample {self.sample_index}): "
                f"{self.field} was {_short(self.was)}, now {_short(self.now)}")  # fmt: skip


@dataclass(frozen=True)
class ResumeState:
    todo: pa.Table  # the attempt records to make now, with their fingerprints
    expected: dict[str, str]  # record id -> fingerprint of every attempt the slots' chains hold now
    changed: tuple[Change, ...]  # one per slot committed from other inputs
    committed_slots: int  # slots with a committed attempt in the index

    def refusal(self, output: str) -> ChangedRecordsError:
        first = self.changed[0]
        return ChangedRecordsError(
            f"{output}: {len(self.changed)} of {self.committed_slots} committed record(s) were made from other inputs "
            f"than this job and manifest give now, so resuming would keep their old images; first: "
            f"{first.describe()}. Regenerate them with --overwrite-changed (policy.changed_records: overwrite), "
            "or write to a new output"
        )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def content_sha256(uri: str) -> str | None:
    """sha256 of the bytes at `uri` now; None when it no longer exists."""
    try:
        return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    except FileNotFoundError:
        return None


def _input_images(row: dict, control_columns: list[str]) -> list[tuple[str, str, str]]:
    """(field, uri, recorded sha256) of every input image the committed row names with a hash."""
    found = [(f, row.get(f), row.get(h)) for f, h in _INPUT_IMAGES]
    uris, hashes = row.get("control_image_uris") or [], row.get("control_image_sha256") or []
    found += [(c, u, h) for c, u, h in zip(control_columns, uris, hashes)]
    return [(f, u, h) for f, u, h in found if u and h]


def _explain(row: dict, record: dict, job: dict, control_columns: list[str]) -> tuple[str, object, object]:
    """The first input that differs between a committed index row and the record asked for now."""
    if row.get("fingerprint") is None:
        return "fingerprint", None, record["fingerprint"]
    for field in RECORD_FIELDS:
        if field in record and row.get(field) != record[field]:
            return field, row.get(field), record[field]
    now_controls = [record.get(c) for c in control_columns]
    if control_columns and (row.get("control_image_uris") or [None] * len(control_columns)) != now_controls:
        return "control_image_uris", row.get("control_image_uris"), now_controls
    if row.get("model_weights_sha256") != job["model"]["weights_sha256"]:
        return "model weights sha256", row.get("model_weights_sha256"), job["model"]["weights_sha256"]
    if row.get("scheduler") != job["scheduler"]:
        return "scheduler", row.get("scheduler"), job["scheduler"]
    was_options, now_options = json.loads(row.get("scheduler_options") or "{}"), job.get("scheduler_options", {})
    if was_options != now_options:
        return "scheduler_options", was_options, now_options
    was_loras = [(x["name"], x["weight"], x["sha256"]) for x in row.get("loras") or []]
    now_loras = [(x["name"], x["weight"], x["sha256"]) for x in job["loras"]]
    if was_loras != now_loras:
        return "loras", was_loras, now_loras
    was_embeddings = [(x["token"], x["sha256"]) for x in row.get("textual_inversions") or []]
    now_embeddings = [(x["token"], x["sha256"]) for x in job.get("textual_inversions", [])]
    if was_embeddings != now_embeddings:
        return "textual_inversions", was_embeddings, now_embeddings
    return "model configs, ControlNet settings or watermark setting", "(other)", "(other)"


@dataclass(frozen=True)
class Attempts:
    """How a run makes a slot's images: replacements on or off, at most `max_attempts` each, and whether a
    transient failure (a store that was down) is tried again with the same seed."""

    replace: bool = True
    max_attempts: int = 1
    retry_failed: bool = True


def resume_state(
    slots: pa.Table,
    index: pa.Table | None,
    job: dict,
    control_columns: list[str],
    fingerprint: Callable[[pa.Table], pa.Table],
    attempts: Attempts = Attempts(),
    *,
    read_sha256: Callable[[str], str | None] = content_sha256,
) -> ResumeState:
    """Walk each slot's attempts through the output's index and say which attempt each slot needs now.

    `slots` are `diffgen.dataset.records.expand`'s rows (attempt 0); `fingerprint` adds the `fingerprint`
    column to attempt records; `job` is `diffgen.dataset.fingerprint.job_inputs(spec)`, used only to name
    what changed. An attempt is settled by a committed row of the same fingerprint whose input images
    still hash as recorded: written (the slot is filled), rejected for a reason no seed changes, or a
    replaceable rejection or failure (the next attempt follows, up to `attempts.max_attempts`).

    The walk is columnar (Arrow and numpy, one pass per attempt): Python touches only the rows of a
    changed slot, which it names. It is per slot, so a run's slots may be walked in any split (by
    `slot_id` prefix, say) and the states merged with `merge_states`.
    """
    rows, now = _committed_rows(index, slots, control_columns, read_sha256)
    if rows is None:  # nothing committed for these slots: every slot's first attempt is to make
        first = _attempt_records(slots, 0, fingerprint)
        expected = dict(zip(first.column("record_id").to_pylist(), first.column("fingerprint").to_pylist()))
        return ResumeState(first, expected, (), 0)
    expected_ids: list[pa.Array] = []
    expected_fps: list[pa.Array] = []
    todo: list[pa.Table] = []
    changes: dict[str, Change] = {}
    active = np.arange(slots.num_rows)
    for attempt in range(attempts.max_attempts):
        if not len(active):
            break
        records = _attempt_records(slots.take(pa.array(active, pa.int64())), attempt, fingerprint)
        ids, fps = records.column("record_id").combine_chunks(), records.column("fingerprint").combine_chunks()
        expected_ids.append(ids)
        expected_fps.append(fps)
        make, follow, changed, latest_stale = _attempt_outcomes(rows, ids, fps, attempts)
        for k, row in zip(changed, latest_stale):
            record = records.slice(int(k), 1).select(
                [c for c in (*_WANTED, *control_columns) if c in records.column_names]).to_pylist()[0]  # fmt: skip
            row["_inputs_changed"] = _moved_input(row, control_columns, now)
            changes.setdefault(record["slot_id"], _change(row, record, job, control_columns))
        todo.append(records.filter(pa.array(make)))
        active = active[follow] if attempts.replace else active[:0]
    settled = rows.filter(rows.column("_settles")).column("_slot")
    committed = pc.count_distinct(settled).as_py() if len(settled) else 0
    expected = dict(zip(pa.concat_arrays(expected_ids).to_pylist(), pa.concat_arrays(expected_fps).to_pylist()))
    ordered = sorted(changes.values(), key=lambda c: (c.row_id, c.sample_index))
    return ResumeState(pa.concat_tables(todo) if todo else fingerprint(slots.slice(0, 0)), expected,
                       tuple(ordered), committed)  # fmt: skip


def _attempt_records(slots: pa.Table, attempt: int, fingerprint: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """Attempt `attempt` of these slots with its fingerprints: attempt 0 is the slot itself, fingerprinted
    already by the plan; a later attempt has a seed of its own, so a fingerprint of its own."""
    records = attempts_of(slots, attempt)
    return records if attempt == 0 and "fingerprint" in records.column_names else fingerprint(records)


def merge_states(states: list[ResumeState]) -> ResumeState:
    """One state from the states of disjoint sets of a run's slots (walked in parts); at least one."""
    todo = [s.todo for s in states if s.todo.num_rows] or [states[0].todo]
    expected: dict[str, str] = {}
    for s in states:
        expected.update(s.expected)
    changes = sorted((c for s in states for c in s.changed), key=lambda c: (c.row_id, c.sample_index))
    return ResumeState(pa.concat_tables(todo), expected, tuple(changes), sum(s.committed_slots for s in states))


# Hex digit values by byte ('0'-'9', 'a'-'f', 'A'-'F'); -1 for any other byte.
_HEX = np.full(256, -1, dtype=np.int64)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def slot_key(table: pa.Table) -> pa.ChunkedArray:
    """Each index row's slot: `slot_id`, or the record id of a row made before attempts existed."""
    key = table.column("record_id")
    return pc.coalesce(table.column("slot_id"), key) if "slot_id" in table.column_names else key


def slot_buckets(keys: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Each slot id's bucket in [0, buckets): its first 8 hex digits as a number, modulo `buckets`.

    Slot and record ids are sha256 hex (`diffgen.dataset.records`), so the buckets are even and every
    attempt of a slot, written by any run, falls in the slot's bucket; an id that is not hex (none is
    made so) is bucketed by its crc32 instead. Vectorised: no Python per id.
    """
    n = len(keys)
    if buckets == 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    heads = pc.utf8_slice_codeunits(keys, 0, 8)
    heads = heads.combine_chunks() if isinstance(heads, pa.ChunkedArray) else heads
    value = np.zeros(n, dtype=np.int64)
    full = pc.fill_null(pc.equal(pc.utf8_length(heads), 8), False).to_numpy(zero_copy_only=False)
    if full.any():
        fixed = heads.filter(pa.array(full)).cast(pa.binary(8))
        digits = _HEX[np.frombuffer(fixed.buffers()[1], np.uint8, count=8 * len(fixed), offset=8 * fixed.offset)]
        digits = digits.reshape(-1, 8)
        value[full] = (digits << (4 * np.arange(7, -1, -1))).sum(axis=1)
        full[np.flatnonzero(full)[(digits < 0).any(axis=1)]] = False
    for k in np.flatnonzero(~full):  # not 8 hex digits: never made by diffgen, bucketed all the same
        value[k] = zlib.crc32(str(keys[int(k)].as_py()).encode())
    return value % buckets


def split_by_bucket(table: pa.Table, buckets: int) -> list[pa.Table]:
    """`table`'s rows by the bucket of their slot (`slot_key`), in `buckets` tables, each in table order."""
    bucket = slot_buckets(slot_key(table), buckets)
    rows = table.take(pa.array(np.argsort(bucket, kind="stable")))
    counts = np.bincount(bucket, minlength=buckets)
    return [rows.slice(int(start), int(count)) for start, count in zip(np.cumsum(counts) - counts, counts)]


_WANTED = ("record_id", "slot_id", "id", "sample_index", "attempt", "fingerprint", *RECORD_FIELDS)


def _attempt_outcomes(
    rows: pa.Table, ids: pa.Array, fps: pa.Array, attempts: Attempts
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """For one attempt's records (`ids`, `fps`): which to make, which go on to the next attempt, and
    which were committed from other inputs (positions, with each one's latest such row as a dict).

    A record's rows of the same fingerprint whose input images still hash as recorded decide it: one
    written settles it; a rejection or replaceable failure settles it, or sends it to the next attempt
    when one of them is replaceable; a transient failure alone is made again (unless `retry_failed` is
    off). With no such row, a row that settled from other inputs makes it *changed* (made again, named).
    """
    n = len(ids)
    at = pc.index_in(rows.column("record_id"), value_set=ids)
    mine = rows.filter(pc.is_valid(at))
    at = at.filter(pc.is_valid(at)).to_numpy(zero_copy_only=False).astype(np.int64)
    status = mine.column("status")
    same = pc.and_(pc.fill_null(pc.equal(mine.column("fingerprint"), fps.take(pa.array(at))), False),
                   pc.invert(mine.column("_moved")))  # fmt: skip
    flags = {
        "same": same,
        "stale": pc.and_(pc.invert(same), mine.column("_settles")),
        "written": pc.and_(same, pc.equal(status, RecordStatus.WRITTEN.value)),
        "settles": pc.and_(same, mine.column("_settles")),
        "replaceable": pc.and_(same, pc.fill_null(mine.column("replaceable"), False)),
    }
    per_record = {name: np.zeros(n, dtype=bool) for name in flags}
    for name, flag in flags.items():  # a record has the flag when any of its rows has it
        per_record[name][at[flag.to_numpy(zero_copy_only=False)]] = True
    same, stale, written, settles, replaceable = (per_record[k] for k in flags)
    changed = stale & ~same  # (also made: it has no row of the same inputs)
    retried = same & ~written & ~settles & attempts.retry_failed  # only transient failures: try the seed again
    make = ~same | retried
    follow = ~written & settles & replaceable
    positions = np.flatnonzero(changed)
    latest: dict[int, dict] = {}
    if len(positions):  # the latest row that settled from other inputs, per changed record
        picked = np.isin(at, positions) & flags["stale"].to_numpy(zero_copy_only=False)
        candidates = mine.filter(pa.array(picked)).append_column("_at", pa.array(at[picked]))
        order = [("created_at", "ascending", "at_start")] if "created_at" in candidates.column_names else []
        candidates = candidates.sort_by([*order, ("_n", "ascending")])
        for row in candidates.to_pylist():
            latest[row["_at"]] = row
    return make, follow, positions, [latest[int(k)] for k in positions]


# The index columns the walk reads: what settles an attempt, and what `_explain` names when one changed.
READS = (
    "record_id", "slot_id", "status", "created_at", "fingerprint", "replaceable", *RECORD_FIELDS,
    *(c for pair in _INPUT_IMAGES for c in pair), "control_image_uris", "control_image_sha256",
    "model_weights_sha256", "scheduler", "scheduler_options", "loras", "textual_inversions",
)  # fmt: skip


def _committed_rows(
    index: pa.Table | None, slots: pa.Table, control_columns: list[str], read_sha256: Callable[[str], str | None]
) -> tuple[pa.Table | None, dict[str, str | None]]:
    """The index rows of these slots (the columns the walk reads), with `_slot` (the slot id, or the
    record id of a row made before attempts existed), `_settles`, `_moved` (one of its input images no
    longer has the sha256 the row recorded) and `_n` (its position, for ties in `created_at`); and the
    sha256 now of every input image a row names. None when there is no such row. Whether a row's inputs
    moved is the row's own fact (not whether another slot's row names the same image), so any split of
    the slots walks the same."""
    if index is None or index.num_rows == 0:
        return None, {}
    key = slot_key(index)
    keep = pc.is_in(key, value_set=slots.column("slot_id").combine_chunks())
    rows = index.select([c for c in dict.fromkeys(READS) if c in index.column_names]).filter(keep)
    if rows.num_rows == 0:
        return None, {}
    rows = rows.append_column("_slot", key.filter(keep))
    if "replaceable" not in rows.column_names:
        rows = rows.append_column("replaceable", pa.nulls(rows.num_rows, pa.bool_()))
    committed = pc.is_in(rows.column("status"), value_set=pa.array(_COMMITTED))
    rows = rows.append_column("_settles", pc.or_(pc.fill_null(committed, False),
                                                 pc.fill_null(rows.column("replaceable"), False)))  # fmt: skip
    now = _input_hashes_now(rows, control_columns, read_sha256)
    rows = rows.append_column("_moved", _moved_rows(rows, control_columns, now))
    return rows.append_column("_n", pa.array(np.arange(rows.num_rows))), now


def _named_images(rows: pa.Table, field: str, hashed: str) -> pa.Array:
    """Per row, whether it names an input image in `field` with a recorded sha256 in `hashed`."""
    if field not in rows.column_names or hashed not in rows.column_names:
        return pa.array(np.zeros(rows.num_rows, dtype=bool))
    return pc.fill_null(pc.and_(pc.not_equal(rows.column(field), ""), pc.not_equal(rows.column(hashed), "")), False)


def _has_controls(rows: pa.Table) -> np.ndarray:
    if "control_image_uris" not in rows.column_names:
        return np.zeros(rows.num_rows, dtype=bool)
    return pc.fill_null(pc.greater(pc.list_value_length(rows.column("control_image_uris")), 0), False) \
        .to_numpy(zero_copy_only=False)  # fmt: skip


def _input_hashes_now(rows: pa.Table, control_columns: list[str], read_sha256) -> dict[str, str | None]:
    """sha256 now of every input image these rows name with a recorded hash, read in threads."""
    uris: set[str] = set()
    for field, hashed in _INPUT_IMAGES:
        named = _named_images(rows, field, hashed)
        if pc.any(named).as_py():
            uris.update(pc.unique(rows.column(field).filter(named)).to_pylist())
    with_controls = _has_controls(rows)
    if with_controls.any():  # a list per row: walked in Python, only where there is one
        for row in rows.filter(pa.array(with_controls)).select(["control_image_uris", "control_image_sha256"]) \
                .to_pylist():  # fmt: skip
            uris.update(u for _, u, _ in _input_images(row, control_columns))
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(sorted(uris), pool.map(read_sha256, sorted(uris))))


def _moved_rows(rows: pa.Table, control_columns: list[str], now: dict[str, str | None]) -> pa.Array:
    """Per row, whether one of the input images it names (and `now` holds) hashes otherwise now."""
    moved = np.zeros(rows.num_rows, dtype=bool)
    if not now:
        return pa.array(moved)
    known = pa.array(list(now), pa.string())
    hashes = pa.array(list(now.values()), pa.string())
    for field, hashed in _INPUT_IMAGES:
        named = _named_images(rows, field, hashed)
        if not pc.any(named).as_py():
            continue
        at = pc.index_in(rows.column(field), value_set=known)
        current = hashes.take(at)
        differs = pc.fill_null(pc.not_equal(current, rows.column(hashed)), True)  # gone now: differs
        moved |= pc.and_(pc.and_(named, pc.is_valid(at)), differs).to_numpy(zero_copy_only=False)
    with_controls = _has_controls(rows)
    for k in np.flatnonzero(with_controls & ~moved):
        row = rows.slice(int(k), 1).select(["control_image_uris", "control_image_sha256"]).to_pylist()[0]
        moved[k] = _moved_input(row, control_columns, now) is not None
    return pa.array(moved)


def _moved_input(row: dict, control_columns: list[str], now: dict[str, str | None]) -> tuple | None:
    """(field, recorded sha256, sha256 now) of the first input image of `row` that hashes otherwise now."""
    moved = [(f, h, now[u]) for f, u, h in _input_images(row, control_columns) if u in now and now[u] != h]
    return moved[0] if moved else None


def _change(row: dict, record: dict, job: dict, control_columns: list[str]) -> Change:
    if row["_inputs_changed"] and row.get("fingerprint") == record["fingerprint"]:
        field, was, now = row["_inputs_changed"]
        field = f"{field} content sha256"
    else:
        field, was, now = _explain(row, record, job, control_columns)
    return Change(record["record_id"], record["id"], record["sample_index"], field, was, now)
