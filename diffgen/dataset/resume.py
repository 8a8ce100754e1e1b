"""Resume: which records an output already holds, made from the very inputs this run asks for.

A record is done when the index has a committed row for it (`written` or `rejected`) whose
`fingerprint` (`diffgen.dataset.fingerprint`) equals the one the job and manifest give now, and whose
input images (init, mask, control) still have the sha256 recorded beside their URIs. A
committed record whose inputs differ is *changed*: by default the run refuses
(`ChangedRecordsError`, naming how many and one example field), because skipping it would keep
an image of other inputs under this run's name; `policy.changed_records: overwrite`
(`--overwrite-changed`) makes it again. `failed` rows are never done: they are tried again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from diffgen.dataset import storage
from diffgen.dataset.fingerprint import RECORD_FIELDS
from diffgen.schemas.record import RecordStatus

_COMMITTED = (RecordStatus.WRITTEN.value, RecordStatus.REJECTED.value)
_INPUT_IMAGES = (("init_image", "init_image_sha256"), ("mask_image", "mask_image_sha256"))


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
    done: frozenset[str]  # record ids committed from the same inputs: skipped
    changed: tuple[Change, ...]  # committed from other inputs: one per record

    def refusal(self, output: str, committed: int) -> ChangedRecordsError:
        first = self.changed[0]
        return ChangedRecordsError(
            f"{output}: {len(self.changed)} of {committed} committed record(s) were made from other inputs than "
            f"this job and manifest give now, so resuming would keep their old images; first: {first.describe()}. "
            "Regenerate them with --overwrite-changed (policy.changed_records: overwrite), or write to a new output"
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
    was_loras = [(x["name"], x["weight"], x["sha256"]) for x in row.get("loras") or []]
    now_loras = [(x["name"], x["weight"], x["sha256"]) for x in job["loras"]]
    if was_loras != now_loras:
        return "loras", was_loras, now_loras
    return "model configs, ControlNet settings or watermark setting", "(other)", "(other)"


def resume_state(
    records: pa.Table,
    index: pa.Table | None,
    job: dict,
    control_columns: list[str],
    *,
    read_sha256: Callable[[str], str | None] = content_sha256,
    threads: int = 16,
) -> ResumeState:
    """Compare the records a run asks for (with their `fingerprint`) against an output's index.

    `job` is `diffgen.dataset.fingerprint.job_inputs(spec)`, used only to name what changed.
    """
    if index is None or index.num_rows == 0:
        return ResumeState(frozenset(), ())
    wanted = {r["record_id"]: r for r in records.select(
        [c for c in ("record_id", "id", "sample_index", "fingerprint", *RECORD_FIELDS, *control_columns)
         if c in records.column_names]).to_pylist()}  # fmt: skip
    matching: dict[str, dict] = {}
    other: dict[str, dict] = {}
    for row in index.to_pylist():
        rid = row["record_id"]
        if rid not in wanted or row["status"] not in _COMMITTED:
            continue
        if row.get("fingerprint") is not None and row["fingerprint"] == wanted[rid]["fingerprint"]:
            matching[rid] = row
        else:
            other[rid] = row
    images = {(u, h) for row in matching.values() for _, u, h in _input_images(row, control_columns)}
    with ThreadPoolExecutor(threads) as pool:
        now = dict(zip([u for u, _ in images], pool.map(read_sha256, [u for u, _ in images])))
    changes = []
    for rid, row in matching.items():
        moved = [(f, h, now[u]) for f, u, h in _input_images(row, control_columns) if now[u] != h]
        if moved:
            field, was, is_ = moved[0]
            changes.append(Change(rid, row["id"], row["sample_index"], f"{field} content sha256", was, is_))
    for rid, row in other.items():
        if rid not in matching:
            field, was, is_ = _explain(row, wanted[rid], job, control_columns)
            changes.append(Change(rid, row["id"], row["sample_index"], field, was, is_))
    changed_ids = {c.record_id for c in changes}
    changes.sort(key=lambda c: (c.row_id, c.sample_index))
    return ResumeState(frozenset(matching.keys() - changed_ids), tuple(changes))
