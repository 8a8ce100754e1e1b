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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
    """
    by_record = _committed_rows(index, slots, control_columns, read_sha256)
    if not by_record:  # nothing committed for these slots: every slot's first attempt is to make
        first = slots if "fingerprint" in slots.column_names else fingerprint(slots)
        expected = dict(zip(first.column("record_id").to_pylist(), first.column("fingerprint").to_pylist()))
        return ResumeState(first, expected, (), 0)
    expected: dict[str, str] = {}
    todo: list[pa.Table] = []
    changes: dict[str, Change] = {}
    active = list(range(slots.num_rows))
    for attempt in range(attempts.max_attempts):
        if not active:
            break
        records = attempts_of(slots.take(pa.array(active, pa.int64())), attempt)
        if attempt or "fingerprint" not in records.column_names:  # attempt 0 is the slot: its fingerprint
            records = fingerprint(records)
        wanted = records.select([c for c in (*_WANTED, *control_columns) if c in records.column_names]).to_pylist()
        make, follow = [], []
        for k, (slot, record) in enumerate(zip(active, wanted)):
            expected[record["record_id"]] = record["fingerprint"]
            rows = by_record.get(record["record_id"], [])
            same = [r for r in rows if r.get("fingerprint") == record["fingerprint"] and not r["_inputs_changed"]]
            stale = [r for r in rows if r not in same and _settles(r)]
            if stale and not same:
                changes.setdefault(record["slot_id"], _change(stale[-1], record, job, control_columns))
                make.append(k)
                continue
            outcome = _outcome(same, attempts)
            if outcome == "make":
                make.append(k)
            elif outcome == "next":
                follow.append(slot)
        todo.append(records.take(pa.array(make, pa.int64())))
        active = follow if attempts.replace else []
    committed = len({r["slot_id"] for rows in by_record.values() for r in rows if _settles(r)})
    todo_table = pa.concat_tables(todo) if todo else fingerprint(slots.slice(0, 0))
    ordered = sorted(changes.values(), key=lambda c: (c.row_id, c.sample_index))
    return ResumeState(todo_table, expected, tuple(ordered), committed)


_WANTED = ("record_id", "slot_id", "id", "sample_index", "attempt", "fingerprint", *RECORD_FIELDS)


def _settles(row: dict) -> bool:
    """A row that decided its attempt: written, rejected, or failed in a way no retry of the same seed fixes."""
    return row["status"] in _COMMITTED or bool(row.get("replaceable"))


def _outcome(rows: list[dict], attempts: Attempts) -> str:
    """What an attempt needs, from its committed rows of the same inputs: "make" it, go on to the "next"
    attempt, or nothing more ("settled")."""
    statuses = {r["status"] for r in rows}
    if RecordStatus.WRITTEN.value in statuses:
        return "settled"
    if any(_settles(r) for r in rows):
        return "next" if any(r.get("replaceable") for r in rows) else "settled"
    if rows and not attempts.retry_failed:  # failed for a reason a retry may fix, but not again in this run
        return "settled"
    return "make"


# The index columns the walk reads: what settles an attempt, and what `_explain` names when one changed.
_READS = (
    "record_id", "slot_id", "status", "created_at", "fingerprint", "replaceable", *RECORD_FIELDS,
    *(c for pair in _INPUT_IMAGES for c in pair), "control_image_uris", "control_image_sha256",
    "model_weights_sha256", "scheduler", "scheduler_options", "loras", "textual_inversions",
)  # fmt: skip


def _committed_rows(
    index: pa.Table | None, slots: pa.Table, control_columns: list[str], read_sha256: Callable[[str], str | None]
) -> dict[str, list[dict]]:
    """The index rows of these slots by record id, oldest first, each marked `_inputs_changed` when one of
    its input images no longer has the sha256 the row recorded."""
    if index is None or index.num_rows == 0:
        return {}
    key = index.column("record_id")
    if "slot_id" in index.column_names:  # an index made before attempts existed has no slot_id
        key = pc.coalesce(index.column("slot_id"), key)
    index = index.filter(pc.is_in(key, value_set=slots.column("slot_id").combine_chunks()))
    rows = index.select([c for c in dict.fromkeys(_READS) if c in index.column_names]).to_pylist()
    for r in rows:
        r["slot_id"] = r.get("slot_id") or r["record_id"]  # an index made before attempts existed
    images = {(u, h) for r in rows if r["status"] in _COMMITTED for _, u, h in _input_images(r, control_columns)}
    with ThreadPoolExecutor(16) as pool:
        now = dict(zip([u for u, _ in images], pool.map(read_sha256, [u for u, _ in images])))
    by_record: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["created_at"] or 0):
        moved = [(f, h, now[u]) for f, u, h in _input_images(r, control_columns) if u in now and now[u] != h]
        r["_inputs_changed"] = moved[0] if moved else None
        by_record.setdefault(r["record_id"], []).append(r)
    return by_record


def _change(row: dict, record: dict, job: dict, control_columns: list[str]) -> Change:
    if row["_inputs_changed"] and row.get("fingerprint") == record["fingerprint"]:
        field, was, now = row["_inputs_changed"]
        field = f"{field} content sha256"
    else:
        field, was, now = _explain(row, record, job, control_columns)
    return Change(record["record_id"], record["id"], record["sample_index"], field, was, now)
