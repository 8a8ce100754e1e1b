"""The real `diffgen` command, as a user or an orchestrator runs it, joined to the session's Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffgen.dataset import storage
from diffgen.jobs.api import EXIT_INVALID, EXIT_OK
from tests.conftest import write_job, write_manifest

REPO = Path(__file__).resolve().parents[2]


def _diffgen(*args: str, ray_address: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    return subprocess.run(
        [sys.executable, "-m", "diffgen.jobs.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


def test_run_writes_images_index_and_summary(ray_cluster, tmp_path, tiny_sd):
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"id": f"row-{i}", "prompt": f"prompt {i}", "num_images": 1 + i % 2, "split": "train"} for i in range(4)],
    )
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest))
    out = tmp_path / "out"
    result = _diffgen("run", str(job), "--output", str(out), "--set", "sampler.steps=3", ray_address=ray_cluster)
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["counts"] == {
        "manifest_rows": 4, "invalid_rows": 0, "images_expected": 6, "images_written": 6, "rejected": 0, "failed": 0,
        "attempts": 6, "replaced": 0, "unfilled": {}, "groups": None,
    }  # fmt: skip
    assert summary["job"]["sampler"]["steps"] == 3
    assert json.loads((out / "run.json").read_text())["counts"] == summary["counts"]
    index = storage.read_parquet_folder(str(out / "index"))
    assert index.num_rows == 6 and set(index.column("split").to_pylist()) == {"train"}
    assert len(list((out / "images").rglob("*.png"))) == 6

    # `diffgen qc` rescores the output under stricter settings; the index stays as it was.
    result = _diffgen("qc", str(out), "--set", "qc.flat_std=1000", ray_address=ray_cluster)
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    rescored = json.loads(result.stdout)
    assert (rescored["would_reject"], rescored["reasons"], rescored["counts"]) == (6, {"flat": 6}, {"written": 6})
    assert (out / "qc" / "report.html").is_file()
    assert storage.read_parquet_folder(str(out / "index")).equals(index)
    assert _diffgen("qc", str(tmp_path), ray_address=ray_cluster).returncode == EXIT_INVALID


def test_bad_manifest_stops_before_any_model_loads(ray_cluster, tmp_path, tiny_sd):
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"id": "a", "prompt": "ok"}, {"id": "a", "prompt": ""}, {"id": "c", "prompt": "x"}]
    )
    job = write_job(tmp_path / "job.yaml", tmp_path / "no-such-model")
    out = tmp_path / "out"
    result = _diffgen("run", str(job), "--manifest", str(manifest), "--output", str(out), ray_address=ray_cluster)
    assert result.returncode == EXIT_INVALID
    assert f"{manifest}: 1 of 3 row(s) invalid" in result.stderr
    assert "row 1 (id='a')" in result.stderr and "prompt" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [("sampler.scheduler=heun", "sampler.scheduler"), ("compute.batch_size=0", "compute.batch_size")],
)
def test_bad_job_spec_names_the_field(ray_cluster, tmp_path, tiny_sd, setting, message):
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest="m.parquet", output=str(tmp_path / "o"))
    result = _diffgen("run", str(job), "--set", setting, ray_address=ray_cluster)
    assert result.returncode == EXIT_INVALID
    assert message in result.stderr and str(job) in result.stderr


def test_missing_model_folder_is_invalid_input(ray_cluster, tmp_path):
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "p"}])
    job = write_job(tmp_path / "job.yaml", tmp_path / "missing", manifest=str(manifest), output=str(tmp_path / "o"))
    result = _diffgen("run", str(job), ray_address=ray_cluster)
    assert result.returncode == EXIT_INVALID
    assert "model.id" in result.stderr and "does not exist" in result.stderr
