from datetime import UTC, datetime, timedelta

import pyarrow as pa

from diffgen import storage
from diffgen.index import committed_ids, compact, read_index


def _shard(output, name, rows):
    table = pa.Table.from_pylist(
        [{"record_id": r, "status": s, "created_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=t)}
         for r, s, t in rows]
    )  # fmt: skip
    storage.write_parquet(table, storage.join(output, "index", name))


def test_compact_keeps_the_best_row_of_each_record(tmp_path):
    out = str(tmp_path)
    _shard(out, "part-a.parquet", [("r1", "written", 0), ("r2", "failed", 0)])
    _shard(out, "part-b.parquet", [("r3", "written", 0)])
    _shard(out, "part-c.parquet", [("r2", "written", 5), ("r4", "failed", 5)])
    assert committed_ids(out) == {"r1", "r3", "r2"}
    assert compact(out) == 1
    index = read_index(out)
    assert sorted(index.column("record_id").to_pylist()) == ["r1", "r2", "r3", "r4"]
    assert dict(zip(index.column("record_id").to_pylist(), index.column("status").to_pylist()))["r2"] == "written"
    names = [u.rsplit("/", 1)[1] for u in storage.list_files(storage.join(out, "index"), ".parquet")]
    assert "part-a.parquet" not in names and {"part-b.parquet", "part-c.parquet"} < set(names)  # only a was stale
    assert compact(out) == 0


def test_compact_repairs_an_interrupted_compaction(tmp_path):
    out = str(tmp_path)
    _shard(out, "part-a.parquet", [("r1", "written", 0)])
    _shard(out, "part-copy.parquet", [("r1", "written", 0)])
    assert compact(out) == 1
    assert read_index(out).column("record_id").to_pylist() == ["r1"]
