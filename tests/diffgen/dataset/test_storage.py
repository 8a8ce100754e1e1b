from pathlib import Path

import pyarrow as pa

from diffgen.dataset import storage


def test_write_bytes_leaves_no_temporary_files(tmp_path: Path):
    uri = storage.join(str(tmp_path), "a/b/c.bin")
    storage.write_bytes(uri, b"hello")
    storage.write_bytes(uri, b"again")
    assert storage.read_bytes(uri) == b"again"
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["c.bin"]


def test_file_uris_work_like_paths(tmp_path: Path):
    storage.write_bytes(f"file://{tmp_path}/x.bin", b"1")
    assert storage.exists(str(tmp_path / "x.bin"))


def test_parquet_folder_round_trip(tmp_path: Path):
    folder = str(tmp_path / "index")
    assert storage.read_parquet_folder(folder) is None
    storage.write_parquet(pa.table({"a": [1, 2]}), storage.join(folder, "p1.parquet"))
    storage.write_parquet(pa.table({"a": [3]}), storage.join(folder, "p2.parquet"))
    assert sorted(storage.read_parquet_folder(folder).column("a").to_pylist()) == [1, 2, 3]
