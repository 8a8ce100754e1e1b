"""The whole pipeline on the session's local Ray, writing to a local folder."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from diffgen.dataset import storage
from diffgen.dataset.records import record_id
from diffgen.pipelines.generate import run
from diffgen.provenance.png import decode_png
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest

ROWS = [
    {"id": "cat-1", "prompt": "a cat", "num_images": 2, "seed": 11, "label": "cat"},
    {"id": "dog-1", "prompt": "a dog", "num_images": 1, "seed": None, "label": "dog"},
    {"id": "cat-2", "prompt": "a small cat", "num_images": 3, "seed": None, "label": "cat"},
]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("manifest") / "m.parquet", ROWS)


def _run(tmp_path, tiny_sd, manifest, output, **overrides):
    job = write_job(tmp_path / "job.yaml", tiny_sd, **overrides)
    return run(load_job_spec(job, manifest=str(manifest), output=str(output)))


def _images(output: Path) -> dict[str, np.ndarray]:
    index = storage.read_parquet_folder(str(output / "index"))
    return {r["record_id"]: decode_png(storage.read_bytes(r["image_uri"]))[0] for r in index.to_pylist()}


def test_index_matches_the_manifest(ray_cluster, tmp_path, tiny_sd, manifest):
    out = tmp_path / "out"
    summary = _run(tmp_path, tiny_sd, manifest, out)
    assert summary.status == "complete"
    c = summary.counts
    assert (c.manifest_rows, c.images_expected, c.images_written, c.rejected, c.failed) == (3, 6, 6, 0, 0)

    index = storage.read_parquet_folder(str(out / "index")).to_pylist()
    expected = {(r["id"], k) for r in ROWS for k in range(r["num_images"])}
    # Both Great Expectations suites ran and their results are saved with the run.
    for suite in ("manifest", "index"):
        saved = json.loads((out / "qc" / "expectations" / f"{suite}.json").read_text())
        assert saved["suite"] == suite and saved["success"] is True and saved["failed"] == []
    assert sorted((r["id"], r["sample_index"]) for r in index) == sorted(expected)
    for row in index:
        assert row["record_id"] == record_id(row["id"], row["sample_index"])
        data = storage.read_bytes(row["image_uri"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert decode_png(data)[0].shape == (32, 32, 3)
        assert row["label"] == row["id"].split("-")[0]
        assert row["status"] == "written" and row["run_id"] == "test"
    assert [r["seed"] for r in sorted(index, key=lambda r: (r["id"], r["sample_index"])) if r["id"] == "cat-1"] == [11, 12]
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk["counts"] == c.model_dump()
    assert on_disk["job"]["sampler"]["steps"] == 4


def test_rerun_skips_committed_records(ray_cluster, tmp_path, tiny_sd, manifest):
    out = tmp_path / "out"
    _run(tmp_path, tiny_sd, manifest, out)
    shards = sorted(p.name for p in (out / "index").iterdir())
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    summary = _run(tmp_path, tiny_sd, manifest, out)
    assert summary.counts.images_written == 6
    assert sorted(p.name for p in (out / "index").iterdir()) == shards
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == mtimes


def test_same_job_twice_and_other_batch_sizes_give_the_same_images(ray_cluster, tmp_path, tiny_sd, manifest):
    first = _run(tmp_path, tiny_sd, manifest, tmp_path / "a", compute={"batch_size": 2})
    second = _run(tmp_path, tiny_sd, manifest, tmp_path / "b", compute={"batch_size": 2})
    third = _run(tmp_path, tiny_sd, manifest, tmp_path / "c", compute={"batch_size": 5, "num_actors": 2})
    assert first.counts == second.counts == third.counts
    a, b, c = (_images(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() == c.keys()
    for rid in a:
        assert np.abs(a[rid].astype(int) - b[rid].astype(int)).max() <= 2
        assert np.abs(a[rid].astype(int) - c[rid].astype(int)).max() <= 2
