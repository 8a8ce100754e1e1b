"""The generation stage: a diffusers pipeline set loaded once, sampling Arrow batches of records.

Per row it reads the input images (init, mask, one per ControlNet), applies the
ControlNets' preprocessors, and samples. A row whose inputs cannot be used (an image
missing or corrupt, a control cell empty, a size the model cannot take) gets status
`rejected` and a reason in `error`; a sampler error gets `failed`; the batch goes on.
A prompt longer than a text encoder's limit is cut by diffusers; the row records it
(`prompt_truncated`, and where in `prompt_truncation`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import pyarrow as pa
import torch

from diffgen.generation.control import preprocess
from diffgen.generation.images import ImageInputError, InputImage, InputLimits, read_image
from diffgen.generation.loading import load_pipeline_set, placement
from diffgen.generation.sampling import Request, Result, generate, prompt_limits, prompt_truncation
from diffgen.generation.variants import PipelineSet
from diffgen.schemas.job import IP_ADAPTER_COLUMN, JobSpec
from diffgen.schemas.record import RecordStatus

log = logging.getLogger(__name__)

_REQUEST_COLUMNS = (
    "prompt", "negative_prompt", "seed", "guidance_scale", "steps", "width", "height",
    "guidance_rescale", "strength", "init_image", "mask_image",
)  # fmt: skip


class _RowRejected(Exception):
    """An input of the row cannot be used; `transient` ones (an unreachable store) make the row `failed`."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class GenerateStage:
    adds = (
        "pixels", "status", "error", "replaceable", "cfg", "pipeline_class",
        "init_image_sha256", "mask_image_sha256", "control_image_uris", "control_image_sha256",
        "prompt_truncated", "prompt_truncation", "ip_adapter_image_sha256",
    )  # fmt: skip

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.pipes: PipelineSet | None = None
        self.control_columns = spec.control_columns()
        policy = spec.policy
        roots = tuple(policy.input_roots) if policy.input_roots is not None else None
        self.limits = InputLimits(policy.max_input_bytes, policy.input_timeout_s, roots)
        required = [self.control_columns[c.name] for c in spec.controlnets if c.required]
        required += [IP_ADAPTER_COLUMN] if any(a.required for a in spec.ip_adapters) else []
        self.reads = ("record_id", *_REQUEST_COLUMNS, *required)

    def setup(self) -> None:
        compute = self.spec.compute
        where = placement(compute)
        if where.device.type == "cpu":
            torch.set_num_threads(compute.threads_per_actor or default_cpu_threads(compute.num_actors))
        self.pipes = load_pipeline_set(self.spec, where)
        log.info(
            "generation stage ready: %s on %s (%s), %d ControlNet(s), %d LoRA(s)",
            type(self.pipes.base).__name__, where.device, where.dtype, len(self.spec.controlnets), len(self.spec.loras),
        )  # fmt: skip

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.pipes is None:
            self.setup()
        rows = batch.select([c for c in (*_REQUEST_COLUMNS, IP_ADAPTER_COLUMN) if c in batch.column_names]).to_pylist()
        controls = {
            name: batch.column(col).to_pylist() if col in batch.column_names else [None] * batch.num_rows
            for name, col in self.control_columns.items()
        }
        cache: dict[tuple[str, str], InputImage] = {}
        results: list[Result | None] = [None] * len(rows)
        requests, where = [], []
        inputs = []
        for i, row in enumerate(rows):
            images: dict[str, InputImage | None] = {}
            try:
                images["init_image"] = self._image(row.get("init_image"), "init_image", "RGB", cache)
                images["mask_image"] = self._image(row.get("mask_image"), "mask_image", "L", cache)
                images[IP_ADAPTER_COLUMN] = self._ip_adapter_image(row.get(IP_ADAPTER_COLUMN), cache)
                control = [self._control(c, controls[c.name][i], cache) for c in self.spec.controlnets]
            except _RowRejected as e:
                results[i] = Result(None, str(e), rejected=not e.transient)
                inputs.append((images, []))
                continue
            inputs.append((images, control))
            requests.append(_request(row, images, control))
            where.append(i)
        for i, result in zip(where, generate(self.pipes, requests, max_batch=self.spec.compute.batch_size)):
            results[i] = result
        self._retry_failed(requests, where, results)
        table = self._columns(batch, results, inputs)
        return self._truncation_columns(table, [row["prompt"] for row in rows])

    def _truncation_columns(self, batch: pa.Table, prompts: list[str]) -> pa.Table:
        limits = prompt_limits(self.pipes.base)
        notes = {prompt: prompt_truncation(limits, prompt) for prompt in set(prompts)}
        cut = [notes[p] for p in prompts]
        truncated = sum(note is not None for note in cut)
        if truncated:
            log.warning(
                "%d of %d prompt(s) in this batch exceed a text encoder's token limit and are truncated "
                "(index columns prompt_truncated, prompt_truncation)", truncated, len(prompts),
            )  # fmt: skip
        batch = batch.append_column("prompt_truncated", pa.array([n is not None for n in cut], pa.bool_()))
        return batch.append_column("prompt_truncation", pa.array(cut, pa.string()))

    def _retry_failed(self, requests: list[Request], where: list[int], results: list[Result | None]) -> None:
        """Try a failed image again alone, up to `policy.row_retries` times: the failure of its group
        (out of memory, a transient device error) must not doom every member. Its own generator
        makes the retry produce the image it would have produced in the batch."""
        for request, i in zip(requests, where):
            attempts = 1
            while _failed(results[i]) and attempts <= self.spec.policy.row_retries:
                results[i] = generate(self.pipes, [request], max_batch=1)[0]
                attempts += 1
            if _failed(results[i]) and attempts > 1:
                results[i] = replace(results[i], error=f"{results[i].error} (after {attempts} attempts)")

    def _image(self, uri: str | None, field: str, mode: str, cache: dict) -> InputImage | None:
        if not uri:
            return None
        key = (field, uri)
        if key not in cache:
            try:
                cache[key] = read_image(uri, mode, self.limits)
            except ImageInputError as e:  # kept, so rows sharing a stalled input wait for it once
                cache[key] = _RowRejected(f"{field}: {e}", transient=e.transient)
        if isinstance(cache[key], _RowRejected):
            raise cache[key]
        return cache[key]

    def _ip_adapter_image(self, uri: str | None, cache: dict) -> InputImage | None:
        if not self.spec.ip_adapters:
            return None
        if not uri and self.spec.ip_adapters[0].required:
            raise _RowRejected(f"{IP_ADAPTER_COLUMN}: empty, but ip_adapters.0 needs an image for every row")
        return self._image(uri, IP_ADAPTER_COLUMN, "RGB", cache)

    def _control(self, spec, uri: str | None, cache: dict) -> tuple[InputImage, object] | None:
        column = self.control_columns[spec.name]
        if not uri:
            if spec.required:
                raise _RowRejected(f"{column}: empty, but ControlNet '{spec.name}' needs an image for every row")
            return None
        raw = self._image(uri, column, "RGB", cache)
        key = (f"preprocessed:{spec.name}", uri)
        if key not in cache:
            cache[key] = preprocess(raw.image, spec)
        return raw, cache[key]

    def _columns(self, batch: pa.Table, results: list[Result], inputs: list) -> pa.Table:
        def status(r: Result) -> str | None:
            if r.error is None:
                return None
            return (RecordStatus.REJECTED if r.rejected else RecordStatus.FAILED).value

        def sha(images: dict, name: str) -> str | None:
            image = images.get(name)
            return image.sha256 if image is not None else None

        has_control = bool(self.spec.controlnets)
        columns = {
            "pixels": pa.array([r.pixels.tobytes() if r.pixels is not None else None for r in results], pa.binary()),
            "status": pa.array([status(r) for r in results], pa.string()),
            "error": pa.array([r.error for r in results], pa.string()),
            "replaceable": pa.array([r.replaceable if r.error is not None else None for r in results], pa.bool_()),
            "cfg": pa.array([r.cfg for r in results], pa.bool_()),
            "pipeline_class": pa.array([r.pipeline_class for r in results], pa.string()),
            "init_image_sha256": pa.array([sha(images, "init_image") for images, _ in inputs], pa.string()),
            "mask_image_sha256": pa.array([sha(images, "mask_image") for images, _ in inputs], pa.string()),
            "ip_adapter_image_sha256": pa.array([sha(images, IP_ADAPTER_COLUMN) for images, _ in inputs], pa.string()),
            "control_image_uris": pa.array(
                [
                    [c[0].uri if c else None for c in control] if has_control and control else None
                    for _, control in inputs
                ],
                pa.list_(pa.string()),
            ),
            "control_image_sha256": pa.array(
                [
                    [c[0].sha256 if c else None for c in control] if has_control and control else None
                    for _, control in inputs
                ],
                pa.list_(pa.string()),
            ),
        }
        for name, values in columns.items():
            batch = batch.append_column(name, values)
        return batch


def default_cpu_threads(num_actors: int, cores: int | None = None) -> int:
    """torch intra-op threads for a CPU generation actor when the job does not set them: the node's
    cores split between the actors, less one core of each share for the pipeline's other work (QC,
    PNG encoding, writes, Ray itself) when the share is more than one core. OpenMP threads that share
    their cores with other busy processes wait on each other at every parallel region: on 2 cores,
    1 actor x 2 threads ran at 0.47 of the bare diffusers loop and 1 actor x 1 thread at 0.92
    (benchmarks/results/pipeline-cpu-*.json)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // num_actors)
    return max(1, share - 1)


def _failed(result: Result | None) -> bool:
    return result is not None and result.error is not None and not result.rejected


def _request(row: dict, images: dict, control: list) -> Request:
    init, mask, prompt_image = images.get("init_image"), images.get("mask_image"), images.get(IP_ADAPTER_COLUMN)
    return Request(
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        seed=row["seed"],
        guidance_scale=row["guidance_scale"],
        steps=row["steps"],
        width=row["width"],
        height=row["height"],
        guidance_rescale=row["guidance_rescale"],
        strength=row["strength"],
        init_image=init.image if init is not None else None,
        mask_image=mask.image if mask is not None else None,
        control_images=tuple(c[1] if c else None for c in control),
        ip_adapter_image=prompt_image.image if prompt_image is not None else None,
        ip_adapter_sha256=prompt_image.sha256 if prompt_image is not None else None,
    )
