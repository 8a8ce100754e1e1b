"""The QC stage inside the real pipeline: CLIP-score threshold rejections reconcile with run.json."""

import json
from collections import Counter

import numpy as np
import pytest

from diffgen.dataset import storage
from diffgen.dataset.index import read_index
from diffgen.metrics.backbones import PixelBackbone
from diffgen.metrics.frechet import FeatureStats
from diffgen.metrics.frechet import fid as fid_value
from diffgen.metrics.reference import reference_stats
from diffgen.pipelines.generate import run
from diffgen.pipelines.qc import qc_output
from diffgen.provenance.png import decode_png, encode_png
from diffgen.schemas.job import load_job_spec
from diffgen.schemas.qc import QcSpec
from tests.conftest import write_job, write_manifest


def test_clip_threshold_rejects_and_counts_agree_with_the_index(ray_cluster, tmp_path, tiny_sd, tiny_clip):
    rows = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 2, "label": i % 2} for i in range(3)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    qc = {"enabled": True, "clip_model": str(tiny_clip), "min_clip_score": 99.9, "fid_group_by": "label"}
    job = write_job(tmp_path / "job.yaml", tiny_sd, qc=qc)

    summary = run(load_job_spec(job, manifest=str(manifest), output=str(tmp_path / "out")))

    index = read_index(str(tmp_path / "out")).to_pylist()
    # No image can pass: each of the 6 slots uses its 4 attempts (policy.max_attempts), all kept in the index.
    assert len(index) == 24 and sorted(r["attempt"] for r in index) == sorted([0, 1, 2, 3] * 6)
    for row in index:
        assert row["status"] == "rejected" and row["image_uri"] is None
        assert row["error"].startswith("qc: clip_score") and 0 <= row["clip_score"] < 99.9
        assert row["phash"] is not None and row["qc_reasons"][0]["reason"] == "clip_score"
    c = summary.counts
    assert (c.images_expected, c.images_written, c.rejected, c.failed) == (6, 0, 6, 0)
    assert (c.attempts, c.replaced, c.unfilled) == (24, 0, {"clip_score": 6})
    assert summary.status == "failed" and not summary.met_policy
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["rejected"] == 6


def _reference(folder, n=12, size=32):
    rng = np.random.default_rng(5)
    for k in range(n):
        storage.write_bytes(storage.join(str(folder), f"ref-{k:02d}.png"),
                            encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))  # fmt: skip
    return str(folder)


def test_run_writes_a_report_with_fid_per_group_merged_from_the_scoring_actor(ray_cluster, tmp_path, tiny_sd):
    rows = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 2, "label": f"c{i % 2}"} for i in range(4)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    qc = {"enabled": True, "fid_group_by": "label", "reference": _reference(tmp_path / "ref"), "report_examples": 3}
    out = tmp_path / "out"
    summary = run(
        load_job_spec(write_job(tmp_path / "job.yaml", tiny_sd, qc=qc), manifest=str(manifest), output=str(out))
    )

    report = json.loads((out / "qc" / "report.json").read_text())
    written = summary.counts.images_written
    assert report["counts"].get("written", 0) == written and written >= 2
    fid = report["fid"]
    assert (fid["covered_images"], fid["written_images"], fid["reference_count"]) == (written, written, 12)
    groups = {g["group"]: g for g in fid["groups"]}
    assert groups["__all__"]["count"] == written
    assert sum(g["count"] for name, g in groups.items() if name != "__all__") == written
    assert set(groups) - {"__all__"} <= {"c0", "c1"}
    # The number is the kernel's on the generated images' features, computed here from scratch.
    backbone = PixelBackbone(16)
    index = read_index(str(out)).to_pylist()
    images = [decode_png((out / r["image_uri"].split(str(out) + "/")[1]).read_bytes())[0] for r in index
              if r["status"] == "written"]  # fmt: skip
    ref = reference_stats(qc["reference"], backbone)
    mine = FeatureStats(backbone.name, backbone.resize, backbone.dim).update(backbone.extract(images))
    # Written PNGs carry the watermark the scored pixels did not: the distance moves by a little only.
    assert groups["__all__"]["fid"] == pytest.approx(fid_value(mine, ref).value, rel=0.02)
    assert fid["backbone"] == "pixels-16" and fid["resize"] == backbone.resize
    assert len(report["best"]) == min(3, written) and (out / "qc" / "report.html").stat().st_size > 1000


def test_diffgen_qc_rescores_an_old_output_without_touching_its_index(ray_cluster, tmp_path, tiny_sd):
    rows = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 1} for i in range(4)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    summary = run(load_job_spec(write_job(tmp_path / "job.yaml", tiny_sd), manifest=str(manifest), output=str(out)))
    before = read_index(str(out))
    assert not (out / "qc" / "report.json").exists()

    spec = QcSpec(enabled=True, reference=_reference(tmp_path / "ref"), flat_std=1000.0)
    report = qc_output(str(out), spec)

    written = summary.counts.images_written
    assert report.mode == "rescore" and report.would_reject == written
    assert report.reasons == {"flat": written}
    # FID is over the whole output, not over the images today's thresholds would keep (none here).
    assert report.fid is not None and report.fid.covered_images == report.fid.written_images == written
    assert report.fid.groups[0].count == written
    assert read_index(str(out)).equals(before)
    assert json.loads((out / "qc" / "report.json").read_text())["would_reject"] == report.would_reject


def _labelled_real(root, counts: dict[str, int], size=32) -> str:
    rng = np.random.default_rng(9)
    for label, n in counts.items():
        for i in range(n):
            storage.write_bytes(str(root / label / f"{label}-{i}.png"),
                                encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))  # fmt: skip
    return str(root)


def test_a_run_with_utility_scores_from_the_actors_samples_and_reports_kid_cmmd_prdc(
    ray_cluster, tmp_path, tiny_sd, tiny_clip, caplog
):
    import logging

    from diffgen.schemas.utility import UtilityReport

    rows = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 2, "label": "ab"[i % 2]} for i in range(6)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    utility = {"real": _labelled_real(tmp_path / "real", {"a": 4, "b": 4, "c": 2}), "few_shot": 1, "resamples": 100}
    qc = {"enabled": True, "clip_model": str(tiny_clip), "fid_backbone": "clip", "fid_group_by": "label",
          "reference": _reference(tmp_path / "ref"), "utility": utility}  # fmt: skip
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="diffgen.reporting.utility")
    summary = run(load_job_spec(write_job(tmp_path / "job.yaml", tiny_sd, qc=qc), manifest=str(manifest),
                                output=str(out)))  # fmt: skip

    written = Counter(r["label"] for r in read_index(str(out)).to_pylist() if r["status"] == "written")
    assert sum(written.values()) == summary.counts.images_written >= 4
    u = UtilityReport.model_validate_json((out / "qc" / "utility.json").read_text())
    assert u.classes == ["a", "b"] and u.real_only == ["c"] and u.synthetic_images == dict(written)
    assert u.backbone.startswith("clip:") and [p.name for p in u.probes] == [
        "synthetic", "real", "few_shot", "few_shot_plus_synthetic"]  # fmt: skip
    assert "embedding a sample" not in caplog.text  # the QC actors' samples were used, not a second pass
    report = json.loads((out / "qc" / "report.json").read_text())
    dist = report["distribution"]
    assert dist["backbone"] == u.backbone and dist["reference_sample_count"] == 12
    groups = {g["group"]: g for g in dist["groups"]}
    assert set(groups) == {"__all__", *written} and groups["__all__"]["sample_count"] == sum(written.values())
    everything = groups["__all__"]
    assert everything["kid"] is not None and everything["cmmd"] is not None
    assert all(0 <= everything[m] <= 1 for m in ("precision", "recall", "coverage"))
    html = (out / "qc" / "report.html").read_text()
    assert "Linear probes on" in html and "KID" in html
