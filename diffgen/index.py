"""The output index: a folder of Parquet shards, one per written batch, exactly one row per record.

Shards are written once per batch and never appended to. A record can appear in
two shards only when it was retried (a failed image regenerated on a re-run, or a
crash between writing a new shard and removing an old one); `compact` keeps the
best row of each record and removes the superseded shards, so the index holds
exactly one row per record at the end of every run.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from diffgen import storage
from schemas.record import RecordStatus

INDEX_DIR = "index"
REJECTS_DIR = "rejects"
# A record's row wins over another of the same record by status first, then recency.
_RANK = {RecordStatus.WRITTEN.value: 2, RecordStatus.REJECTED.value: 1, RecordStatus.FAILED.value: 0}


def read_index(output: str) -> pa.Table | None:
    return storage.read_parquet_folder(storage.join(output, INDEX_DIR))


def committed_ids(output: str) -> set[str]:
    """Records a re-run skips: written or rejected. Failed ones are tried again."""
    index = read_index(output)
    if index is None:
        return set()
    keep = [s in (RecordStatus.WRITTEN.value, RecordStatus.REJECTED.value) for s in index.column("status").to_pylist()]
    return set(index.filter(pa.array(keep)).column("record_id").to_pylist())


def compact(output: str) -> int:
    """Leave one row per record in the index; returns the number of superseded rows removed."""
    shards = storage.list_files(storage.join(output, INDEX_DIR), ".parquet")
    tables = {uri: storage.read_parquet(uri) for uri in shards}
    best: dict[str, tuple[tuple[int, object], str, int]] = {}
    for uri, table in tables.items():
        ids = table.column("record_id").to_pylist()
        keys = zip(table.column("status").to_pylist(), table.column("created_at").to_pylist())
        for row, (rid, (status, created)) in enumerate(zip(ids, keys)):
            rank = (_RANK.get(status, -1), created)
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
    digest = hashlib.sha256("\n".join(sorted(merged.column("record_id").to_pylist())).encode()).hexdigest()[:20]
    target = storage.join(output, INDEX_DIR, f"part-{digest}.parquet")
    if merged.num_rows:
        storage.write_parquet(merged, target)
    # The merged shard is complete before any old one goes: a crash here leaves duplicates that
    # the next compaction removes, never a missing row.
    for uri in dirty:
        if uri != target:
            storage.delete(uri)
    return sum(t.num_rows for u, t in tables.items() if u in dirty) - merged.num_rows
