"""Fault injection on real parts: the driver SIGKILLed mid-run, then the same job re-run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diffgen.dataset import storage
from diffgen.dataset.index import read_index
from diffgen.pipelines.generate import run
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest

REPO = Path(__file__).resolve().parents[2]


def test_driver_killed_mid_run_then_rerun_gives_exactly_one_row_per_record(ray_cluster, tmp_path, tiny_sd):
    rows = [{"id": f"row-{i}", "prompt": f"prompt {i}", "num_images": 2} for i in range(24)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), output=str(out),
                    sampler={"steps": 6})  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    driver = subprocess.Popen([sys.executable, "-m", "diffgen.jobs.cli", "run", str(job)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list((out / "index").glob("*.parquet")):
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    partial = read_index(str(out))
    assert partial is not None and 0 < partial.num_rows < 48, "the kill should land mid-run"
    assert not (out / "run.json").exists()

    summary = run(load_job_spec(job))

    c = summary.counts
    assert (c.images_expected, c.images_written, c.rejected, c.failed) == (48, 48, 0, 0)
    index = read_index(str(out))
    ids = index.column("record_id").to_pylist()
    assert len(ids) == len(set(ids)) == 48
    for uri in index.column("image_uri").to_pylist():
        assert storage.exists(uri)
