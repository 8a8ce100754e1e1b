"""Fault injection on real parts: the generation actor SIGKILLed while it runs a batch.

Ray restarts the actor (which loads the model again) and retries the batch it lost;
image keys and index shard names depend only on record ids, so the redone batch
overwrites whatever part of it had been written and every record lands exactly once.
"""

import hashlib
import json
import os
import signal
import threading
import time

import psutil
import ray

from diffgen.dataset import storage
from diffgen.dataset.index import read_index
from diffgen.dataset.layout import RUN_FILE
from diffgen.pipelines.generate import run
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest

# Ray Data runs a map_batches class in an actor named after it; while a batch runs, the
# process title is `ray::MapWorker(MapBatches(_GenerateActor)).submit`.
_WORKER_CLASS = "MapWorker(MapBatches(_GenerateActor))"
_BUSY_TITLE = f"ray::{_WORKER_CLASS}.submit"


def _busy_generation_actor() -> tuple[str, int] | None:
    """(actor id, pid) of a generation actor of this Ray cluster that is running a batch right now."""
    # The state API needs a dashboard, which the test cluster does not run; the GCS actor table does not.
    job = ray.get_runtime_context().get_job_id()
    for actor_id, actor in ray._private.state.actors().items():
        mine = actor["JobID"] == job and actor["ActorClassName"] == _WORKER_CLASS
        if not mine or actor["State"] != "ALIVE" or not actor["Pid"]:
            continue
        try:
            title = " ".join(psutil.Process(actor["Pid"]).cmdline())
        except psutil.Error:
            continue
        if _BUSY_TITLE in title:
            return actor_id, actor["Pid"]
    return None


def test_generation_actor_killed_mid_batch_every_image_is_written_once(ray_cluster, tmp_path, tiny_sd):
    rows = [{"id": f"row-{i}", "prompt": f"prompt {i}", "num_images": 2} for i in range(8)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), output=str(out),
                    sampler={"steps": 6})  # fmt: skip
    killed: dict = {}

    def kill_mid_batch():
        # Once the actor has been inside a batch for a moment: past the batch's start, before its end.
        deadline, busy_since = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            busy = _busy_generation_actor()
            busy_since = (busy_since or time.monotonic()) if busy else None
            if busy and time.monotonic() - busy_since > 0.2 and _busy_generation_actor() == busy:
                index = read_index(str(out))
                killed.update(actor_id=busy[0], pid=busy[1], rows_before=0 if index is None else index.num_rows)
                os.kill(busy[1], signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_mid_batch, daemon=True)
    killer.start()
    summary = run(load_job_spec(job))
    killer.join(timeout=5)

    assert killed, "no generation actor was caught running a batch"
    assert killed["rows_before"] < 16, "the kill should land mid-run"
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
    assert ray._private.state.actors(killed["actor_id"])["NumRestarts"] >= 1, "Ray should have restarted the actor"

    c = summary.counts
    assert (c.images_expected, c.images_written, c.rejected, c.failed) == (16, 16, 0, 0)
    assert summary.status == "complete"
    on_disk = json.loads((out / RUN_FILE).read_text())
    assert on_disk["counts"] == c.model_dump() and on_disk["status"] == "complete"

    index = read_index(str(out))
    pairs = sorted(zip(index.column("id").to_pylist(), index.column("sample_index").to_pylist()))
    assert pairs == sorted((f"row-{i}", j) for i in range(8) for j in range(2))
    assert index.num_rows == len(set(index.column("record_id").to_pylist())) == 16
    assert set(index.column("status").to_pylist()) == {"written"}
    for uri, sha in zip(index.column("image_uri").to_pylist(), index.column("sha256").to_pylist()):
        assert hashlib.sha256(storage.read_bytes(uri)).hexdigest() == sha
    # A redone batch overwrote its own keys: no stray image beside the indexed ones.
    assert sorted(str(p) for p in (out / "images").rglob("*.png")) == sorted(index.column("image_uri").to_pylist())
