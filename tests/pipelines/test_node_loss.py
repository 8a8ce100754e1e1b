"""Fault injection: a GPU node of a multi-node Ray cluster dies mid-run; its work is redone elsewhere."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_job, write_manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # starts Ray in its own processes
def test_losing_a_node_mid_run_loses_no_image(tmp_path, tiny_sd):
    rows = [{"id": f"row-{i}", "prompt": f"prompt {i}", "num_images": 2} for i in range(24)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    job = write_job(
        tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), output=str(out),
        sampler={"steps": 6}, compute={"num_actors": 2, "gpus_per_actor": 1, "batch_size": 2},
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "pipelines" / "node_loss_run.py"), str(job), str(out)],
        capture_output=True, text=True, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, timeout=500,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert report["rows_before"] < 48, "the node must die mid-run"
    assert report["counts"]["images_written"] == 48 and report["counts"]["failed"] == 0
    assert report["rows"] == report["unique"] == 48
