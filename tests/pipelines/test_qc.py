"""The QC stage inside the real pipeline: CLIP-score threshold rejections reconcile with run.json."""

import json

import pytest

from diffgen.index import read_index
from diffgen.metrics.tiny_clip import build_tiny_clip
from pipelines.generate import run
from schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_clip_threshold_rejects_and_counts_agree_with_the_index(ray_cluster, tmp_path, tiny_sd, tiny_clip):
    rows = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 2, "label": i % 2} for i in range(3)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    qc = {"enabled": True, "clip_model": str(tiny_clip), "min_clip_score": 99.9, "fid_group_by": "label"}
    job = write_job(tmp_path / "job.yaml", tiny_sd, qc=qc)

    summary = run(load_job_spec(job, manifest=str(manifest), output=str(tmp_path / "out")))

    index = read_index(str(tmp_path / "out")).to_pylist()
    assert len(index) == 6
    for row in index:
        assert row["status"] == "rejected" and row["image_uri"] is None
        assert row["error"].startswith("qc: clip_score") and 0 <= row["clip_score"] < 99.9
        assert row["phash"] is not None and row["qc_reasons"][0].startswith("clip_score")
    c = summary.counts
    assert (c.images_expected, c.images_written, c.rejected, c.failed) == (6, 0, 6, 0)
    assert summary.status == "failed"
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["rejected"] == 6
