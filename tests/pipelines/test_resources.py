"""A job the cluster cannot hold is refused in pre-flight, or fails after a bounded wait, never hangs."""

import time

import pytest

from diffgen.pipelines.plan import plan
from diffgen.pipelines.resources import ClusterTooSmallError, Demand, demands, shortfall, wait_for_resources
from diffgen.schemas.job import JobSpec, JobSpecError, load_job_spec
from tests.conftest import write_job, write_manifest


def _spec(tmp_path, tiny_sd, **compute) -> JobSpec:
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "a cat"}])
    job = write_job(tmp_path / "job.yaml", tiny_sd, compute=compute)
    return load_job_spec(job, manifest=str(manifest), output=str(tmp_path / "out"))


def test_packing_counts_every_actor_and_names_the_first_that_does_not_fit():
    two_gpu_nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    gen = Demand("generation actor", {"GPU": 1.0}, 2)
    assert shortfall([gen], two_gpu_nodes) is None
    # The QC actor's quarter GPU has no GPU left beside two whole-GPU generators: Ray would wait forever.
    why = shortfall([gen, Demand("QC actor", {"GPU": 0.25}, 1)], two_gpu_nodes)
    assert why.startswith("compute: the cluster cannot hold QC actor 1 of 1 (each needs GPU 0.25)")
    assert shortfall([Demand("generation actor", {"GPU": 0.75}, 2), Demand("QC actor", {"GPU": 0.25}, 1)],
                     two_gpu_nodes) is None  # fmt: skip
    assert "generation actor 3 of 3" in shortfall([Demand("generation actor", {"GPU": 1.0}, 3)], two_gpu_nodes)


def test_demands_follow_the_job(tmp_path, tiny_sd):
    spec = _spec(tmp_path, tiny_sd, num_actors=2, gpus_per_actor=0.5, cpus_per_actor=1)
    found = {d.role: d for d in demands(spec)}
    assert found["generation actor"] == Demand("generation actor", {"CPU": 1, "GPU": 0.5}, 2)
    assert found["writer actor"].count == 4 and found["writer actor"].resources == {"CPU": 0.5}


@pytest.mark.parametrize(
    ("compute", "needs"),
    [({"gpus_per_actor": 1}, "generation actor 1 of 1 (each needs GPU 1)"),
     ({"cpus_per_actor": 3}, "generation actor 1 of 1 (each needs CPU 3)")],
)  # fmt: skip
def test_a_job_this_machine_cannot_hold_is_refused_in_the_preflight(tmp_path, tiny_sd, compute, needs):
    with pytest.raises(JobSpecError) as err:
        plan(_spec(tmp_path, tiny_sd, **compute))
    assert needs in str(err.value) and "its nodes have CPU " in str(err.value)


def test_on_a_cluster_the_wait_for_nodes_is_bounded(ray_cluster, tmp_path, tiny_sd):
    spec = _spec(tmp_path, tiny_sd, gpus_per_actor=1)
    started = time.monotonic()
    with pytest.raises(ClusterTooSmallError, match=r"waited 1 s \(compute.resource_wait_s\)"):
        wait_for_resources(spec, timeout_s=1)
    assert time.monotonic() - started < 10
    wait_for_resources(_spec(tmp_path, tiny_sd), timeout_s=1)  # a job that fits does not wait
