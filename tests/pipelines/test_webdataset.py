"""A run with the WebDataset output on: its shards hold exactly the index's written images."""

import hashlib
import io
import json
import tarfile

from diffgen.dataset import storage
from diffgen.dataset.layout import WEBDATASET_DIR, WEBDATASET_SHARDS
from diffgen.dataset.layout import webdataset_shard as shard_name
from diffgen.dataset.webdataset import sample_json
from diffgen.pipelines.generate import run
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest

ROWS = [
    {"id": "cat-1", "prompt": "a cat", "num_images": 2, "label": "cat", "width": None},
    {"id": "dog-1", "prompt": "a dog", "num_images": 2, "label": "dog", "width": None},
    {"id": "cat-2", "prompt": "a small cat", "num_images": 2, "label": "cat", "width": None},
    # 36 px is not a multiple of the VAE's 8: rejected, so it must stay out of the shards.
    {"id": "odd-1", "prompt": "an odd size", "num_images": 1, "label": "odd", "width": 36},
]


def _members(uri: str) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(uri))) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_run_writes_shards_matching_the_index(ray_cluster, tmp_path, tiny_sd):
    manifest = write_manifest(tmp_path / "m.parquet", ROWS)
    out = tmp_path / "out"

    def _run(shard_max_bytes: int):
        job = write_job(
            tmp_path / "job.yaml",
            tiny_sd,
            sampler={"steps": 2},
            policy={"max_lost_fraction": 0.5},
            webdataset={"enabled": True, "shard_max_bytes": shard_max_bytes, "min_shards": 1},
        )
        return run(load_job_spec(job, manifest=str(manifest), output=str(out)))

    summary = _run(20_480)
    c = summary.counts
    assert (c.images_written, c.rejected, summary.status) == (6, 1, "partial")
    index = storage.read_parquet_folder(str(out / "index")).to_pylist()
    written = {r["record_id"]: r for r in index if r["status"] == "written"}
    assert len(written) == 6 and len(index) == 7

    shards = storage.list_files(str(out / WEBDATASET_DIR), ".tar")
    assert len(shards) >= 2, "a 20 KB limit splits six images"
    members = [m for uri in shards for m in _members(uri)]
    assert [name for name, _ in members] == [f"{k}.{ext}" for k in sorted(written) for ext in ("png", "json")]
    for name, data in members:
        row = written[name.split(".")[0]]
        if name.endswith(".png"):
            assert data == storage.read_bytes(row["image_uri"])
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
        else:
            assert data == sample_json(row)
            meta = json.loads(data)
            assert (meta["id"], meta["label"], meta["prompt"], meta["seed"]) == (
                row["id"], row["label"], row["prompt"], row["seed"]
            )  # fmt: skip

    placed = storage.read_parquet(str(out / WEBDATASET_SHARDS)).to_pylist()
    assert sorted(p["record_id"] for p in placed) == sorted(written)
    assert {p["shard"] for p in placed} == {u.rsplit("/", 1)[1] for u in shards}
    assert (out / "run.json").exists()

    # A re-run has nothing to generate; it packs again, into one shard now, and drops the old ones.
    again = _run(1 << 20)
    assert again.counts.images_written == 6
    assert [u.rsplit("/", 1)[1] for u in storage.list_files(str(out / WEBDATASET_DIR), ".tar")] == [shard_name(0)]
    assert _members(str(out / WEBDATASET_DIR / shard_name(0))) == members
