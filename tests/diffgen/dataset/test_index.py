from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from diffgen.dataset import storage
from diffgen.dataset.index import CorruptIndexError, compact, quarantine_corrupt_shards, read_index


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


def _rows(output, name, rows):
    table = pa.Table.from_pylist([
        {"record_id": r, "status": s, "created_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=t),
         "fingerprint": fp, "image_uri": uri}
        for r, s, t, fp, uri in rows
    ])  # fmt: skip
    storage.write_parquet(table, storage.join(output, "index", name))


def test_a_row_of_the_current_inputs_wins_and_the_old_image_goes(tmp_path):
    """A changed record made again and rejected this time: its old written image must not stay beside the index."""
    out = str(tmp_path)
    old_image = storage.join(out, "images", "r1", "r1.png")
    storage.write_bytes(old_image, b"old pixels")
    kept_image = storage.join(out, "images", "r2", "r2.png")
    storage.write_bytes(kept_image, b"kept")
    _rows(out, "part-old.parquet", [("r1", "written", 0, "fp-old", old_image), ("r2", "written", 0, "fp2", kept_image)])
    _rows(out, "part-new.parquet", [("r1", "rejected", 5, "fp-new", None), ("r2", "failed", 5, "fp2", None)])
    assert compact(out, {"r1": "fp-new", "r2": "fp2"}) == 2
    rows = {r["record_id"]: r for r in read_index(out).to_pylist()}
    assert rows["r1"]["status"] == "rejected" and rows["r1"]["fingerprint"] == "fp-new"
    assert rows["r2"]["status"] == "written"  # same inputs: the written row still beats a failed retry
    assert not storage.exists(old_image) and storage.exists(kept_image)


def test_a_truncated_shard_is_named_and_can_be_quarantined(tmp_path):
    out = str(tmp_path)
    _shard(out, "part-good.parquet", [("r1", "written", 0)])
    _shard(out, "part-bad.parquet", [("r2", "written", 0)])
    bad = tmp_path / "index" / "part-bad.parquet"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(CorruptIndexError) as err:
        read_index(out)
    assert "part-bad.parquet" in str(err.value) and "--quarantine-corrupt-index" in str(err.value)
    assert read_index(out, skip_corrupt=True).column("record_id").to_pylist() == ["r1"]
    moved = quarantine_corrupt_shards(out)
    assert [m.rsplit("/", 1)[1] for m in moved] == ["part-bad.parquet"]
    assert (tmp_path / "quarantine" / "index" / "part-bad.parquet").exists() and not bad.exists()
    assert read_index(out).column("record_id").to_pylist() == ["r1"]
