"""Random outputs for resume tests, and the resume walk written the plain way, row by row in Python: the reference `diffgen.dataset.resume`'s
columnar walk is held to (tests/diffgen/dataset/test_resume.py). Slow on purpose; never used by the product."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diffgen.dataset.records import attempt_record_id, attempt_seed, attempts_of, record_id
from diffgen.dataset.resume import _COMMITTED, _WANTED, READS, Attempts, ResumeState, _change, _input_images


def _settles(row: dict) -> bool:
    return row["status"] in _COMMITTED or bool(row.get("replaceable"))


def _outcome(rows: list[dict], attempts: Attempts) -> str:
    statuses = {r["status"] for r in rows}
    if "written" in statuses:
        return "settled"
    if any(_settles(r) for r in rows):
        return "next" if any(r.get("replaceable") for r in rows) else "settled"
    if rows and not attempts.retry_failed:
        return "settled"
    return "make"


def committed_rows(index, slots, control_columns, read_sha256) -> dict[str, list[dict]]:
    if index is None or index.num_rows == 0:
        return {}
    key = index.column("record_id")
    if "slot_id" in index.column_names:
        key = pc.coalesce(index.column("slot_id"), key)
    index = index.filter(pc.is_in(key, value_set=slots.column("slot_id").combine_chunks()))
    rows = index.select([c for c in dict.fromkeys(READS) if c in index.column_names]).to_pylist()
    for r in rows:
        r["slot_id"] = r.get("slot_id") or r["record_id"]
    images = {(u, h) for r in rows for _, u, h in _input_images(r, control_columns)}
    with ThreadPoolExecutor(4) as pool:
        now = dict(zip([u for u, _ in images], pool.map(read_sha256, [u for u, _ in images])))
    by_record: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["created_at"] or 0):
        moved = [(f, h, now[u]) for f, u, h in _input_images(r, control_columns) if u in now and now[u] != h]
        r["_inputs_changed"] = moved[0] if moved else None
        by_record.setdefault(r["record_id"], []).append(r)
    return by_record


def resume_state(slots, index, job, control_columns, fingerprint, attempts, *, read_sha256) -> ResumeState:
    by_record = committed_rows(index, slots, control_columns, read_sha256)
    expected: dict[str, str] = {}
    todo: list[pa.Table] = []
    changes = {}
    active = list(range(slots.num_rows))
    for attempt in range(attempts.max_attempts):
        if not active:
            break
        records = attempts_of(slots.take(pa.array(active, pa.int64())), attempt)
        if attempt or "fingerprint" not in records.column_names:
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


CONTROLS = ["control_image"]
JOB = {"model": {"weights_sha256": "w"}, "scheduler": "euler", "loras": []}
STATUSES = ["written", "rejected", "failed"]
HASHES = {"h0": "h0", "h1": "h1"}


def _fingerprinted(records: pa.Table, version: str) -> pa.Table:
    prints = pa.array([hashlib.sha256(f"{version}{r}{s}".encode()).hexdigest()[:16] for r, s in
                       zip(records.column("record_id").to_pylist(), records.column("seed").to_pylist())])  # fmt: skip
    if "fingerprint" in records.column_names:
        return records.set_column(records.column_names.index("fingerprint"), "fingerprint", prints)
    return records.append_column("fingerprint", prints)


def fingerprint_fn(version: str):
    """A record fingerprint for tests: a digest of `version`, record id and seed (it pickles, for Ray tasks)."""
    return partial(_fingerprinted, version=version)


def random_slots(rng: np.random.Generator, n: int, prefix: str = "mem://") -> pa.Table:
    ids = [f"row-{k // 2}" for k in range(n)]
    samples = [k % 2 for k in range(n)]
    slot_ids = [record_id(i, s) for i, s in zip(ids, samples)]
    inits = [None if rng.random() < 0.5 else f"{prefix}in/{rng.integers(4)}.png" for _ in range(n)]
    controls = [None if rng.random() < 0.6 else f"{prefix}ctl/{rng.integers(3)}.png" for _ in range(n)]
    table = pa.table({
        "id": ids, "prompt": [f"prompt {rng.integers(3)}" for _ in range(n)], "sample_index": pa.array(samples, pa.int32()),
        "seed": pa.array([int(x) for x in rng.integers(0, 2**31, n)], pa.int64()), "init_image": inits,
        "control_image": controls, "slot_id": slot_ids, "attempt": pa.array([0] * n, pa.int32()), "record_id": slot_ids,
    })  # fmt: skip
    return fingerprint_fn("now")(table)


def random_index(rng: np.random.Generator, slots: pa.Table, hashes: dict[str, str] = HASHES) -> pa.Table | None:
    rows = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    listed = slots.to_pylist() + [{"slot_id": record_id("other-run", 0), "seed": 5, "prompt": "x", "id": "other-run",
                                   "sample_index": 0, "init_image": None, "control_image": None}]  # fmt: skip
    for slot in listed:
        for attempt in range(3):
            for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
                rid = slot["slot_id"] if attempt == 0 else attempt_record_id(slot["slot_id"], attempt)
                seed = slot["seed"] if attempt == 0 else attempt_seed(slot["seed"], attempt)
                current = hashlib.sha256(f"now{rid}{seed}".encode()).hexdigest()[:16]
                stale = rng.random() < 0.2
                control = slot["control_image"]
                rows.append({
                    "record_id": rid, "slot_id": None if (attempt == 0 and rng.random() < 0.1) else slot["slot_id"],
                    "id": slot["id"], "sample_index": slot["sample_index"], "attempt": attempt,
                    "status": str(rng.choice(STATUSES)),
                    "replaceable": [None, False, True][int(rng.integers(3))],
                    "fingerprint": None if rng.random() < 0.05 else ("old" if stale else current),
                    "prompt": slot["prompt"] + (" (was)" if stale else ""), "seed": seed,
                    "init_image": slot["init_image"],
                    "init_image_sha256": None if slot["init_image"] is None else str(rng.choice(["h0", "h1"])),
                    "control_image_uris": None if control is None else [control],
                    "control_image_sha256": None if control is None else [hashes[str(rng.choice(["h0", "h1"]))]],
                    "model_weights_sha256": "w", "scheduler": "euler",
                    "created_at": start + timedelta(seconds=int(rng.integers(0, 50))),
                })  # fmt: skip
    if not rows:
        return None
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("record_id", pa.string()), ("slot_id", pa.string()), ("id", pa.string()), ("sample_index", pa.int32()),
        ("attempt", pa.int32()), ("status", pa.string()), ("replaceable", pa.bool_()), ("fingerprint", pa.string()),
        ("prompt", pa.string()), ("seed", pa.int64()), ("init_image", pa.string()), ("init_image_sha256", pa.string()),
        ("control_image_uris", pa.list_(pa.string())), ("control_image_sha256", pa.list_(pa.string())),
        ("model_weights_sha256", pa.string()), ("scheduler", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
    ]))  # fmt: skip


def random_inputs_now(rng: np.random.Generator, prefix: str = "mem://") -> dict[str, str | None]:
    """Which recorded hash ("h0", "h1") each input image has now; None: it is gone."""
    now = {f"{prefix}in/{k}.png": str(rng.choice(["h0", "h1", None])) for k in range(4)}
    now.update({f"{prefix}ctl/{k}.png": str(rng.choice(["h0", "h1"])) for k in range(3)})
    return {k: (None if v == "None" else v) for k, v in now.items()}
