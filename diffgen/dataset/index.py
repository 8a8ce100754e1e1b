"""The output index: a folder of Parquet shards, one per written batch, exactly one row per record.

Shards are written once per batch and never appended to. A record can appear in
two shards only when it was retried (a failed image regenerated on a re-run, or a
crash between writing a new shard and removing an old one); `compact` keeps the
best row of each record and removes the superseded shards, so the index holds
exactly one row per record at the end of every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from diffgen.dataset import storage
from diffgen.dataset.layout import INDEX_DIR, QUARANTINE_DIR, index_shard, quarantined_index_shard
from diffgen.schemas.record import RecordStatus

# A record's row wins over another of the same record by status first, then recency.
_RANK = {RecordStatus.WRITTEN.value: 2, RecordStatus.REJECTED.value: 1, RecordStatus.FAILED.value: 0}



class CorruptIndexError(RuntimeError):
    """An index shard that cannot be read; the message names it and the way to recover."""


def by_slot(rows) -> dict[str, list[dict]]:
    """Index rows (dicts) grouped by the slot they fill: `slot_id`, or the record id for rows written
    before slots existed (each its own slot, attempt 0)."""
    slots: dict[str, list[dict]] = {}
    for row in rows:
        slots.setdefault(row.get("slot_id") or row["record_id"], []).append(row)
    return slots


def read_shards(
    uris: Sequence[str], columns: Sequence[str] | None = None
) -> tuple[dict[str, pa.Table], list[str]]:
    """These index shards by URI (with `columns`, only those), and a line naming each one that cannot be
    read; a shard removed meanwhile (by a concurrent compaction) is neither."""
    tables, bad = {}, []
    for uri in uris:
        try:
            tables[uri] = storage.read_parquet(uri, columns)
        except (pa.ArrowInvalid, OSError, EOFError) as e:
            if isinstance(e, FileNotFoundError):
                continue
            bad.append(f"{uri} ({type(e).__name__}: {e})"[:300])
    return tables, bad


def corrupt_index_error(output: str, bad: list[str]) -> CorruptIndexError:
    return CorruptIndexError(
        f"{len(bad)} index shard(s) of {output} cannot be read: {'; '.join(bad[:3])}. Their records cannot be "
        f"told apart from new ones. Re-run with --quarantine-corrupt-index (policy.corrupt_index: quarantine) "
        f"to move them to {storage.join(output, QUARANTINE_DIR, INDEX_DIR)}/ and make their records again"
    )


def _read_shards(
    output: str, skip_corrupt: bool = False, columns: Sequence[str] | None = None
) -> dict[str, pa.Table]:
    """Every index shard by URI (with `columns`, only those); `CorruptIndexError` naming the unreadable
    ones unless `skip_corrupt`."""
    tables, bad = read_shards(index_files(output), columns)
    if bad and not skip_corrupt:
        raise corrupt_index_error(output, bad)
    return tables


def index_files(output: str) -> list[str]:
    """The index's shard URIs: what changed between two listings says whether another run wrote."""
    return storage.list_files(storage.join(output, INDEX_DIR), ".parquet")


def read_index(output: str, skip_corrupt: bool = False, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The whole index (with `columns`, only those of them a shard has); unreadable shards raise
    `CorruptIndexError`, or are left out with `skip_corrupt`."""
    tables = list(_read_shards(output, skip_corrupt, columns).values())
    return pa.concat_tables(tables, promote_options="default") if tables else None


def quarantine_corrupt_shards(output: str) -> list[str]:
    """Move every unreadable index shard to OUTPUT/quarantine/index/; returns the shards moved."""
    moved = []
    for uri in storage.list_files(storage.join(output, INDEX_DIR), ".parquet"):
        try:
            storage.read_parquet(uri)
        except FileNotFoundError:
            continue
        except (pa.ArrowInvalid, OSError, EOFError):
            storage.write_bytes(storage.join(output, quarantined_index_shard(uri.rsplit("/", 1)[1])),
                                storage.read_bytes(uri))  # fmt: skip
            storage.delete(uri)
            moved.append(uri)
    return moved


def compact(output: str, current: dict[str, str] | None = None, slots: set[str] | None = None) -> int:
    """Leave one row per record in the index; returns the number of superseded rows removed.

    With `current` (record id -> the fingerprint the run asked for), a row made from those inputs
    beats one made from others whatever its status; then status, then recency. With `slots` (the run's
    slot ids), a row of one of those slots that is not a current attempt at all (an attempt of inputs
    since changed) is removed. An image that no remaining row points at is deleted, so no image of old
    inputs is left beside the index.
    """
    tables = _read_shards(output)
    best: dict[str, tuple[tuple[bool, int, object], str, int]] = {}
    for uri, table in tables.items():
        names = ("record_id", "slot_id", "status", "created_at", "fingerprint")
        for row, r in enumerate(_column_rows(table, names)):
            rid = r["record_id"]
            if slots is not None and current is not None and (r["slot_id"] or rid) in slots and rid not in current:
                continue  # an attempt of a slot's former inputs: no longer part of its chain
            fresh = current is None or rid not in current or r["fingerprint"] == current[rid]
            if slots is not None and not fresh and (r["slot_id"] or rid) in slots:
                continue
            rank = (fresh, _RANK.get(r["status"], -1), r["created_at"])
            if rid not in best or rank > best[rid][0]:
                best[rid] = (rank, uri, row)
    winners = {(uri, row) for _, uri, row in best.values()}
    dirty = [uri for uri, t in tables.items() if any((uri, r) not in winners for r in range(t.num_rows))]
    if not dirty:
        return 0
    kept = [
        tables[uri].take(pa.array(sorted(r for u, r in winners if u == uri), pa.int64())) for uri in dirty
    ]
    merged = pa.concat_tables(kept, promote_options="default")
    target = storage.join(output, index_shard(merged.column("record_id").to_pylist()))
    if merged.num_rows:
        storage.write_parquet(merged, target)
    # The merged shard is complete before any old one goes: a crash here leaves duplicates that
    # the next compaction removes, never a missing row.
    for uri in dirty:
        if uri != target:
            storage.delete(uri)
    for stale in _orphaned_images(tables, winners):
        storage.delete(stale)
    return sum(t.num_rows for u, t in tables.items() if u in dirty) - merged.num_rows


def _column_rows(table: pa.Table, names: tuple[str, ...]) -> list[dict]:
    """`table`'s rows as dicts of `names`, a column the table lacks (an older index) read as null."""
    return pa.table({n: table.column(n) if n in table.column_names else pa.nulls(table.num_rows)
                     for n in names}).to_pylist()  # fmt: skip


def _orphaned_images(tables: dict[str, pa.Table], winners: set) -> set[str]:
    """Images written by removed rows that no remaining row points at."""
    kept, removed = set(), set()
    for uri, table in tables.items():
        for row, r in enumerate(_column_rows(table, ("image_uri",))):
            if r["image_uri"]:
                (kept if (uri, row) in winners else removed).add(r["image_uri"])
    return removed - kept
