"""QC and writer actors yield the CPU to generation: their niceness, read in their own processes."""

import os
import subprocess
import sys

import pytest
import ray

from diffgen.pipelines.qc import QcActor, StatsSink
from diffgen.pipelines.write import WriteActor
from diffgen.schemas.job import JobSpec
from diffgen.schemas.qc import QcSpec

pytestmark = pytest.mark.skipif(not hasattr(os, "nice"), reason="the platform has no process niceness")


def _niceness_after(start: int, niceness: int | None) -> str:
    """In a fresh process started at niceness `start`: `lower_cpu_priority(niceness)`'s answer and os.nice(0)."""
    code = (
        "import os; from diffgen.pipelines.priority import lower_cpu_priority; "
        f"print(lower_cpu_priority({niceness!r}), os.nice(0))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(["nice", "-n", str(start), sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


def test_niceness_is_raised_never_lowered_and_none_leaves_it():
    base = os.nice(0)
    assert _niceness_after(0, 19) == "19 19"
    assert _niceness_after(0, base + 5) == f"{base + 5} {base + 5}"
    # Lowering needs privileges a worker has no business using: the higher niceness stays.
    assert _niceness_after(10, 5) == f"{base + 10} {base + 10}"
    assert _niceness_after(3, None) == f"None {base + 3}"


def test_qc_and_writer_actors_run_below_the_generators(ray_cluster, tmp_path, tiny_sd):
    spec = JobSpec.model_validate({"run_id": "nice", "model": {"id": str(tiny_sd)},
                                   "provenance": {"allow_unwatermarked": True}})  # fmt: skip
    assert spec.compute.helper_niceness == 19

    def niceness(actor_cls, *args) -> int:
        actor = ray.remote(num_cpus=0)(actor_cls).remote(*args)
        try:
            return ray.get(actor.__ray_call__.remote(lambda self: os.nice(0)))
        finally:
            ray.kill(actor)

    @ray.remote(num_cpus=0)
    def worker_niceness() -> int:
        return os.nice(0)

    ray_default = ray.get(worker_niceness.remote())  # what a generation actor runs at
    sink = StatsSink.remote()
    assert niceness(WriteActor, spec, str(tmp_path / "out"), "nice", None) == 19
    assert niceness(QcActor, QcSpec(enabled=True), sink, 19) == 19
    kept = spec.model_copy(update={"compute": spec.compute.model_copy(update={"helper_niceness": None})})
    assert niceness(WriteActor, kept, str(tmp_path / "out"), "nice", None) == ray_default
    assert niceness(QcActor, QcSpec(enabled=True), sink, None) == ray_default
    assert ray_default < 19
