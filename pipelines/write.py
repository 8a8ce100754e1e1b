"""The write stage on Ray: a pool of long-lived writer actors.

This module imports nothing that loads models: a writer actor's process unpickles its class from
here, and importing diffusers would cost each writer seconds of CPU (tens of seconds on a busy
2-core node) taken from generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import ray

from diffgen.pipelines.priority import lower_cpu_priority
from diffgen.pipelines.progress import status_counts
from diffgen.provenance.c2pa import C2paCredentials
from diffgen.schemas.job import ComputeSpec, JobSpec
from diffgen.stages.write import WriteStage

if TYPE_CHECKING:  # the plan's module imports diffusers (pre-flight)
    from diffgen.pipelines.plan import Plan


class WriteActor(WriteStage):
    """The write stage, set up once (weights hash, C2PA signer) when Ray starts the actor.

    As plain tasks, writes ran on whatever worker was free, and on a node with more worker
    processes than cores Ray kills a worker that has been idle for a second: every burst of
    batches then started a fresh worker that imported the stack again. Writes are retry-safe
    (deterministic names), so the batches of a lost actor are simply redone.
    """

    def __init__(self, spec: JobSpec, output: str, run_id: str, credentials: C2paCredentials | None):
        lower_cpu_priority(spec.compute.helper_niceness)
        super().__init__(spec, output, run_id, credentials)
        self.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Writes the batch and its index shard; returns only its counts (`status_counts`), which is all
        the driver needs: the index rows stay in the shard and never pass through the driver."""
        return status_counts(super().__call__(batch))


# CPUs Ray reserves per writer actor.
WRITER_CPUS = 0.5


def writer_count(compute: ComputeSpec) -> int:
    """`compute.write_actors`, else 1 for CPU generators and two per generation actor on GPUs.

    A writer spends ~5 ms of CPU on a 64x64 image, where a CPU generator spends ~100 ms. At 512x512
    it spends ~0.2 s (watermark and its check 0.15 s, PNG 0.05 s) and at 1024x1024 ~0.8 s, against a
    GPU's ~0.15 s (SD 1.5) and ~0.9 s (SDXL) per image: one writer would hold an SD 1.5 GPU back."""
    if compute.write_actors is not None:
        return compute.write_actors
    return 2 * compute.num_actors if compute.gpus_per_actor > 0 else 1


def write_map(ds: ray.data.Dataset, p: Plan, *, batch_size: int) -> ray.data.Dataset:
    """`ds` written by a fixed pool of `writer_count` actors. A fixed pool, not an autoscaling one:
    Ray Data's autoscaler stopped idle writers between bursts of batches and started new ones, each
    paying its start-up again."""
    return ds.map_batches(
        WriteActor,
        fn_constructor_args=(p.spec, p.output, p.run_id, p.credentials),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=writer_count(p.spec.compute)),
        num_cpus=WRITER_CPUS,
    )
