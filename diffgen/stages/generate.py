"""The generation stage: a diffusers pipeline loaded once, sampling Arrow batches of records."""

from __future__ import annotations

import logging
import os

import pyarrow as pa
import torch

from diffgen.loading import load_pipeline, placement
from diffgen.sampling import Request, generate
from diffgen.schedulers import build_scheduler
from schemas.job import JobSpec
from schemas.record import RecordStatus

log = logging.getLogger(__name__)

_REQUEST_COLUMNS = ("prompt", "negative_prompt", "seed", "guidance_scale", "steps", "width", "height")


class GenerateStage:
    reads = ("record_id", *_REQUEST_COLUMNS)
    adds = ("pixels", "status", "error")

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.pipe = None

    def setup(self) -> None:
        compute = self.spec.compute
        where = placement(compute)
        if where.device.type == "cpu":
            threads = compute.threads_per_actor or max(1, (os.cpu_count() or 1) // compute.num_actors)
            torch.set_num_threads(threads)
        pipe = load_pipeline(self.spec.model, where)
        pipe.scheduler = build_scheduler(self.spec.sampler.scheduler, pipe.scheduler)
        self.pipe = pipe
        log.info("generation stage ready on %s (%s)", where.device, where.dtype)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.pipe is None:
            self.setup()
        columns = {c: batch.column(c).to_pylist() for c in _REQUEST_COLUMNS}
        requests = [Request(*values) for values in zip(*(columns[c] for c in _REQUEST_COLUMNS))]
        results = generate(self.pipe, requests, max_batch=self.spec.compute.batch_size)
        pixels = [r.pixels.tobytes() if r.pixels is not None else None for r in results]
        status = [None if r.error is None else RecordStatus.FAILED.value for r in results]
        error = [r.error for r in results]
        return (
            batch.append_column("pixels", pa.array(pixels, pa.binary()))
            .append_column("status", pa.array(status, pa.string()))
            .append_column("error", pa.array(error, pa.string()))
        )
