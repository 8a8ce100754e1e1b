import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import webdataset as wds

from diffgen.dataset import storage
from diffgen.dataset.layout import WEBDATASET_DIR, WEBDATASET_SHARDS
from diffgen.dataset.layout import webdataset_shard as shard_name
from diffgen.dataset.records import record_id
from diffgen.dataset.webdataset import WebDatasetError, pack, sample_json
from diffgen.provenance.png import encode_png


def _index(output: str, written: int = 12, seed: int = 0) -> pa.Table:
    """An index as the write stage leaves it: real PNGs of varied sizes, plus a rejected and a failed row."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(written + 2):
        rid = record_id(f"row-{i}", 0)
        status = "written" if i < written else ("rejected", "failed")[i - written]
        uri = sha = None
        if status == "written":
            side = int(rng.integers(24, 56))
            data = encode_png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
            uri = storage.join(output, "images", rid[:2], f"{rid}.png")
            storage.write_bytes(uri, data)
            sha = hashlib.sha256(data).hexdigest()
        rows.append(
            {
                "record_id": rid,
                "id": f"row-{i}",
                "sample_index": 0,
                "run_id": "run-1",
                "status": status,
                "error": None if status == "written" else "clip_score",
                "image_uri": uri,
                "sha256": sha,
                "seed": 2**62 + i,
                "prompt": f"a café, {i} 東京",
                "created_at": datetime(2026, 11, 22, tzinfo=UTC) + timedelta(seconds=i),
                "qc_reasons": [],
                "label": i % 3,
                "score": float("nan") if i == 1 else i / 4,
            }
        )
    return pa.Table.from_pylist(rows)


def _shards(output: str) -> list[str]:
    return storage.list_files(storage.join(output, WEBDATASET_DIR), ".tar")


def _members(uri: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(uri))) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _written(index: pa.Table) -> dict[str, dict]:
    return {r["record_id"]: r for r in index.to_pylist() if r["status"] == "written"}


def test_every_written_image_is_packed_byte_for_byte_with_its_index_row(tmp_path) -> None:
    out = str(tmp_path / "out")
    index = _index(out)
    result = pack(out, index, shard_max_bytes=40_960)

    written = _written(index)
    shards = _shards(out)
    assert [u.rsplit("/", 1)[1] for u in shards] == [shard_name(i) for i in range(len(shards))]
    assert result.shards == len(shards) >= 3 and result.samples == 12 and result.removed == 0
    names, seen = [], {}
    for uri in shards:
        for info, data in _members(uri):
            names.append(info.name)
            assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (0, 0, 0, "", "", 0o644)
            key, ext = info.name.split(".")
            seen.setdefault(key, {})[ext] = data
    # png then json per sample, samples in record_id order across shards; no rejected or failed row
    assert names == [f"{k}.{ext}" for k in sorted(written) for ext in ("png", "json")]
    for key, row in written.items():
        png = seen[key]["png"]
        assert png == storage.read_bytes(row["image_uri"])
        assert hashlib.sha256(png).hexdigest() == row["sha256"]
        meta = json.loads(seen[key]["json"])
        expected = {**row, "created_at": row["created_at"].isoformat()}
        if key == record_id("row-1", 0):
            expected["score"] = None  # NaN is not JSON
        assert meta == expected
    assert json.loads(seen[record_id("row-0", 0)]["json"])["prompt"] == "a café, 0 東京"

    placed = storage.read_parquet(storage.join(out, WEBDATASET_SHARDS))
    assert sorted(placed.column("record_id").to_pylist()) == sorted(written)
    for entry in placed.to_pylist():
        shard = storage.read_bytes(storage.join(out, WEBDATASET_DIR, entry["shard"]))
        png = shard[entry["png_offset"] : entry["png_offset"] + entry["png_size"]]
        assert png == seen[entry["record_id"]]["png"] and entry["sha256"] == written[entry["record_id"]]["sha256"]


def test_shards_fill_up_to_the_limit_and_no_further(tmp_path) -> None:
    out = str(tmp_path / "out")
    index = _index(out, written=16, seed=1)
    limit = 30_720
    pack(out, index, shard_max_bytes=limit)

    shards = [_members(u) for u in _shards(out)]
    sizes = [len(storage.read_bytes(u)) for u in _shards(out)]
    assert len(shards) >= 4 and all(size <= limit for size in sizes), sizes
    for members, following in zip(shards, shards[1:]):
        # The next shard's first sample would not have fitted: a real tar with it added is over the limit.
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for info, data in members + following[:2]:
                tar.addfile(info, io.BytesIO(data))
        assert len(buffer.getvalue()) > limit

    # A sample larger than the limit gets a shard of its own rather than being dropped.
    pack(out, index, shard_max_bytes=10_240)
    packed = [(len(storage.read_bytes(u)), len(_members(u)) // 2) for u in _shards(out)]
    assert sum(n for _, n in packed) == 16
    assert all(size <= 10_240 or n == 1 for size, n in packed) and any(size > 10_240 for size, _ in packed), packed


def test_repacking_is_byte_identical_and_removes_stale_shards(tmp_path) -> None:
    out = str(tmp_path / "out")
    index = _index(out)
    pack(out, index, shard_max_bytes=20_480)
    first = {u: storage.read_bytes(u) for u in _shards(out)}
    assert pack(out, index.select(index.column_names[::-1]), shard_max_bytes=20_480).removed == 0
    assert {u: storage.read_bytes(u) for u in _shards(out)} == first  # column order does not matter either

    result = pack(out, index, shard_max_bytes=1 << 20)
    assert result.shards == 1 and result.removed == len(first) - 1
    assert [u.rsplit("/", 1)[1] for u in _shards(out)] == [shard_name(0)]
    placed = storage.read_parquet(storage.join(out, WEBDATASET_SHARDS))
    assert set(placed.column("shard").to_pylist()) == {shard_name(0)} and placed.num_rows == 12

    assert pack(out, None, shard_max_bytes=1 << 20).removed == 1
    assert _shards(out) == []
    assert storage.read_parquet(storage.join(out, WEBDATASET_SHARDS)).num_rows == 0


def test_an_image_changed_since_indexing_is_refused(tmp_path) -> None:
    out = str(tmp_path / "out")
    index = _index(out, written=3)
    uri = index.column("image_uri")[1].as_py()
    data = bytearray(storage.read_bytes(uri))
    data[-20] ^= 0x01
    storage.write_bytes(uri, bytes(data))
    with pytest.raises(WebDatasetError, match="sha256 differs"):
        pack(out, index, shard_max_bytes=1 << 20)


def test_an_index_that_cannot_be_packed_is_refused(tmp_path) -> None:
    out = str(tmp_path / "out")
    index = _index(out, written=2)
    with pytest.raises(WebDatasetError, match="sha256 missing"):
        pack(out, index.drop_columns(["sha256"]), shard_max_bytes=1 << 20)
    dotted = index.set_column(0, "record_id", pa.array(["a.b", "c", "d", "e"]))
    with pytest.raises(WebDatasetError, match="'a.b' cannot be a WebDataset key"):
        pack(out, dotted, shard_max_bytes=1 << 20)
    twice = pa.concat_tables([index, index.slice(0, 1)])
    with pytest.raises(WebDatasetError, match="appears twice"):
        pack(out, twice, shard_max_bytes=1 << 20)


def test_sample_json_is_stable_and_plain() -> None:
    row = {"b": 1, "a": datetime(2026, 1, 2, tzinfo=UTC), "c": [float("inf"), b"\x00\xff"], "d": {"x": None}}
    assert sample_json(row) == sample_json(dict(reversed(row.items())))
    assert json.loads(sample_json(row)) == {
        "a": "2026-01-02T00:00:00+00:00",
        "b": 1,
        "c": [None, "AP8="],
        "d": {"x": None},
    }


def test_shards_on_s3(s3_bucket, tmp_path) -> None:
    out = f"{s3_bucket}/runs/wds"
    index = _index(out, written=5)
    result = pack(out, index, shard_max_bytes=20_480)
    shards = _shards(out)
    assert len(shards) == result.shards >= 2 and all(u.startswith(f"{out}/{WEBDATASET_DIR}/") for u in shards)
    keys = [info.name for uri in shards for info, _ in _members(uri)]
    assert keys == [f"{k}.{ext}" for k in sorted(_written(index)) for ext in ("png", "json")]


def test_the_webdataset_package_reads_the_shards(tmp_path) -> None:
    out = str(tmp_path / "out")
    index = _index(out)
    pack(out, index, shard_max_bytes=40_960)
    written = _written(index)
    samples = list(wds.WebDataset(_shards(out), shardshuffle=False))
    assert [s["__key__"] for s in samples] == sorted(written)
    for sample in samples:
        row = written[sample["__key__"]]
        assert hashlib.sha256(sample["png"]).hexdigest() == row["sha256"]
        assert json.loads(sample["json"])["id"] == row["id"]
    decoded = next(iter(wds.WebDataset(_shards(out)[:1], shardshuffle=False).decode("rgb8")))
    assert decoded["png"].ndim == 3 and decoded["json"]["record_id"] == decoded["__key__"]


def _with_phash_and_split(index: pa.Table) -> pa.Table:
    """The QC columns a real index has: a 64-bit `phash` (uint64, above 2^63 for half the rows) and a split."""
    n = index.num_rows
    index = index.append_column("phash", pa.array([(2**63 + i) if i % 2 else i for i in range(n)], pa.uint64()))
    return index.append_column("split", pa.array(["train" if i % 4 else "val" for i in range(n)]))


def test_64_bit_hashes_are_hex_strings_that_every_reader_loads(tmp_path) -> None:
    from datasets import load_dataset

    out = str(tmp_path / "out")
    index = _with_phash_and_split(_index(out))
    pack(out, index, shard_max_bytes=1 << 20)
    expected = {r["record_id"]: f"{r['phash']:016x}" for r in _written(index).values()}
    metas = [json.loads(data) for uri in _shards(out) for info, data in _members(uri) if info.name.endswith(".json")]
    assert {m["record_id"]: m["phash"] for m in metas} == expected
    assert json.loads(sample_json({"big": 2**64 - 1, "small": -(2**63)})) == {"big": str(2**64 - 1), "small": -(2**63)}

    # Hugging Face's webdataset builder parses each sample's JSON with Arrow (int64): no overflow now.
    loaded = load_dataset("webdataset", data_files={"train": _shards(out)}, split="train",
                          cache_dir=str(tmp_path / "hf-cache"))  # fmt: skip
    assert sorted(loaded["__key__"]) == sorted(expected)
    assert {row["__key__"]: row["json"]["phash"] for row in loaded} == expected
    assert loaded[0]["png"].size == (loaded[0]["png"].width, loaded[0]["png"].height)


def test_min_shards_spreads_the_samples_evenly_and_a_2_worker_dataloader_reads_each_once(tmp_path) -> None:
    import torch

    out = str(tmp_path / "out")
    index = _index(out, written=12)
    pack(out, index, shard_max_bytes=1 << 20, min_shards=8)
    shards = _shards(out)
    assert [len(_members(u)) // 2 for u in shards] == [1, 2, 1, 2, 1, 2, 1, 2]  # 12 over 8, in record_id order
    few = str(tmp_path / "few")
    pack(few, _index(few, written=3), shard_max_bytes=1 << 20, min_shards=8)
    assert len(_shards(few)) == 3  # fewer samples than min_shards: one each

    # Each worker reads its own shards (webdataset's split_by_worker): every sample exactly once.
    pipeline = wds.WebDataset(shards, shardshuffle=False).decode("rgb8").to_tuple("__key__", "png")
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)
    keys = [key for key, _ in loader]
    assert sorted(keys) == sorted(_written(index)) and len(keys) == 12


def test_split_by_writes_one_folder_of_shards_per_value(tmp_path) -> None:
    out = str(tmp_path / "out")
    index = _with_phash_and_split(_index(out, written=12))
    result = pack(out, index, shard_max_bytes=1 << 20, min_shards=2, split_by="split")
    folder = storage.join(out, WEBDATASET_DIR)
    by_split = {split: storage.list_files(storage.join(folder, f"split={split}"), ".tar") for split in ("train", "val")}
    assert {k: len(v) for k, v in by_split.items()} == {"train": 2, "val": 2} and result.shards == 4
    assert _shards(out) == []  # nothing at the top level
    for split, uris in by_split.items():
        rows = [json.loads(d) for u in uris for info, d in _members(u) if info.name.endswith(".json")]
        assert rows and {r["split"] for r in rows} == {split}
    placed = storage.read_parquet(storage.join(out, WEBDATASET_SHARDS))
    expected = {shard_name(i, ("split", s)) for s in ("train", "val") for i in (0, 1)}
    assert set(placed.column("shard").to_pylist()) == expected

    # Packing again without split_by removes the split folders' shards.
    assert pack(out, index, shard_max_bytes=1 << 20).removed == 4

    bad = index.set_column(index.column_names.index("split"), "split", pa.array(["../x"] * index.num_rows))
    with pytest.raises(WebDatasetError, match="'../x' of 'split' cannot name a folder"):
        pack(out, bad, shard_max_bytes=1 << 20, split_by="split")
    with pytest.raises(WebDatasetError, match="no column 'fold'"):
        pack(out, index, shard_max_bytes=1 << 20, split_by="fold")
