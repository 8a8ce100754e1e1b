"""Sampling a batch of records with a loaded pipeline set.

Each image has its own CPU `torch.Generator` seeded from its record's seed, so
its pixels do not depend on which batch, actor or device produced it (up to
float round-off). Records that cannot share one pipeline call (another mode, size,
step count, guidance, strength or set of ControlNets) are split into compatible
groups first; grouping never changes an image.

Two kinds of problem come back per record instead of raising: a request the model
cannot run as asked (`rejected`: a size it cannot take, a mode its family lacks) and
a pipeline call that raised (`failed`, for every record of that call only).

`prompt_truncation` says where the text encoders cut a prompt that is too long, which
diffusers itself only logs.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from diffgen.generation.families import mode_for
from diffgen.generation.loading import size_refusal
from diffgen.generation.variants import PipelineSet, call_parameters

TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")


@dataclass(frozen=True, eq=False)
class Request:
    """What one image needs; everything else about it is in the job config.

    `control_images` has one entry per ControlNet of the job, in job order (already
    preprocessed); None where an optional ControlNet has no image for this record.
    """

    prompt: str
    negative_prompt: str
    seed: int
    guidance_scale: float
    steps: int
    width: int
    height: int
    guidance_rescale: float = 0.0
    strength: float | None = None
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    control_images: tuple[Image.Image | None, ...] = field(default=())
    # The IP-Adapter image prompt and its sha256; None runs the adapter at scale 0 (an optional adapter).
    ip_adapter_image: Image.Image | None = None
    ip_adapter_sha256: str | None = None

    @property
    def mode(self) -> str:
        return mode_for(
            init_image=self.init_image is not None,
            mask_image=self.mask_image is not None,
            control=any(c is not None for c in self.control_images),
        )

    @property
    def group_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call."""
        controls = tuple(c is not None for c in self.control_images)
        strength = -1.0 if self.strength is None else self.strength
        return (
            self.mode,
            controls,
            self.width,
            self.height,
            self.steps,
            self.guidance_scale,
            self.guidance_rescale,
            strength,
            # diffusers encodes one image prompt per adapter and call, shared by the call's prompts
            self.ip_adapter_sha256 or "",
        )


@dataclass(frozen=True)
class Result:
    """An RGB uint8 image (H, W, 3), or the reason there is none.

    `rejected` marks an input problem (nothing was sampled); otherwise an error means the
    pipeline call failed. `replaceable`: another seed may well succeed (a non-finite output), so the
    slot gets a new attempt. `pipeline_class` and `cfg` say what produced the image.
    """

    pixels: np.ndarray | None
    error: str | None = None
    rejected: bool = False
    pipeline_class: str | None = None
    cfg: bool | None = None
    replaceable: bool = False


def check(pipes: PipelineSet, r: Request) -> str | None:
    """Why the model cannot run this request as asked, naming the field; None when it can."""
    mode = r.mode
    if not pipes.supports(mode):
        culprit = "mask_image" if r.mask_image is not None else "init_image"
        return f"{culprit}: model family '{pipes.family.name}' has no {mode} pipeline in diffusers"
    cls = pipes.pipeline_class(mode)
    refusal = size_refusal(pipes.trained_sizes, r.width, r.height)
    if refusal:
        return refusal
    multiple = pipes.size_multiple(mode)
    if r.width % multiple or r.height % multiple:
        return (
            f"width, height: {r.width}x{r.height} is not divisible by {multiple}, "
            f"which {cls.__name__} needs with this model's VAE"
        )
    steps_refusal = pipes.steps_refusal(r.steps)
    if steps_refusal:
        return f"steps: {r.steps} refused by {steps_refusal}"
    if r.guidance_rescale > 0 and "guidance_rescale" not in call_parameters(cls):
        return f"guidance_rescale: {cls.__name__} does not support it; set it to 0 for this row"
    if r.init_image is not None:
        if r.strength is None:
            return "strength: missing for an img2img/inpaint row"
        if r.steps * r.strength < 1:
            return f"strength: {r.strength} of {r.steps} steps leaves no denoising step; raise steps or strength"
    return None


def prompt_limits(pipe: DiffusionPipeline) -> list[tuple[str, Any, int]]:
    """(name, tokenizer, token limit) of each text encoder's tokenizer, as the pipeline applies them.

    A CLIP tokenizer is cut at its own `model_max_length` (77); a T5 one at the call's default
    `max_sequence_length` (SD3 256, Flux 512), which diffgen does not override.
    """
    t5_limit = inspect.signature(type(pipe).__call__).parameters.get("max_sequence_length")
    limits = []
    for name in TOKENIZERS:
        tokenizer = getattr(pipe, name, None)
        if tokenizer is None:
            continue
        clip = type(tokenizer).__name__.startswith("CLIP") or t5_limit is None
        limits.append((name, tokenizer, tokenizer.model_max_length if clip else t5_limit.default))
    return limits


def prompt_truncation(limits: Sequence[tuple[str, Any, int]], prompt: str) -> str | None:
    """Where the text encoders cut `prompt`, e.g. 'tokenizer: 112 > 77 tokens'; None when it fits them all.

    Counts include the start/end tokens, as the limits do.
    """
    cuts = []
    for name, tokenizer, limit in limits:
        count = len(tokenizer(prompt, verbose=False).input_ids)
        if count > limit:
            cuts.append(f"{name}: {count} > {limit} tokens")
    return "; ".join(cuts) or None


def generate(pipes: PipelineSet | DiffusionPipeline, requests: Sequence[Request], max_batch: int) -> list[Result]:
    """One result per request, in order. A group whose pipeline call raises fails only its own records."""
    pipes = PipelineSet.wrap(pipes)
    results: list[Result | None] = [None] * len(requests)
    runnable = []
    for i, r in enumerate(requests):
        reason = check(pipes, r)
        if reason is None:
            runnable.append(i)
        else:
            results[i] = Result(None, reason, rejected=True)
    order = sorted(runnable, key=lambda i: requests[i].group_key)
    for key, members in groupby(order, key=lambda i: requests[i].group_key):
        members = list(members)
        step = max_batch
        if key[0].startswith("controlnet") and (pipes.family.controlnet_global_rng or len(pipes.controlnet_specs) > 1):
            # One record per call: see Family.controlnet_global_rng; and diffusers' multi-ControlNet
            # pipelines take a single conditioning image per ControlNet for the whole call.
            step = 1
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            for i, r in zip(chunk, _call(pipes, [requests[i] for i in chunk])):
                results[i] = r
    return results  # type: ignore[return-value]


def _to_uint8(images: np.ndarray, cls: str, cfg: bool) -> list[Result]:
    results = []
    for image in images:
        if not np.isfinite(image).all():
            results.append(Result(None, "non_finite_output: the sampler produced NaN or Inf", False, cls, cfg,
                                  replaceable=True))  # fmt: skip
        else:
            results.append(Result((np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8), None, False, cls, cfg))
    return results


def _control_arguments(pipes: PipelineSet, chunk: list[Request], param: str) -> dict[str, Any]:
    """The ControlNet images and schedules of one call; an absent optional ControlNet gets a black image at scale 0."""
    specs = pipes.controlnet_specs
    if len(specs) == 1:
        spec = specs[0]
        return {
            param: [r.control_images[0] for r in chunk],
            "controlnet_conditioning_scale": spec.conditioning_scale,
            "control_guidance_start": spec.guidance_start,
            "control_guidance_end": spec.guidance_end,
        }
    (request,) = chunk
    present = [c is not None for c in request.control_images]
    black = Image.new("RGB", (request.width, request.height))
    return {
        param: [c or black for c in request.control_images],
        # Scale 0 adds exact zeros to the denoiser's residuals: the same image as without that ControlNet.
        "controlnet_conditioning_scale": [s.conditioning_scale if p else 0.0 for s, p in zip(specs, present)],
        "control_guidance_start": [s.guidance_start for s in specs],
        "control_guidance_end": [s.guidance_end for s in specs],
    }


def _call(pipes: PipelineSet, chunk: list[Request]) -> list[Result]:
    first = chunk[0]
    mode = first.mode
    pipe = pipes.get(mode)
    cls = type(pipe)
    params = call_parameters(cls)
    width, height = first.width, first.height
    cfg = pipes.classifier_free(first.guidance_scale)
    generators = [torch.Generator("cpu").manual_seed(r.seed) for r in chunk]
    kwargs: dict[str, Any] = {
        "prompt": [r.prompt for r in chunk],
        "num_inference_steps": first.steps,
        "guidance_scale": first.guidance_scale,
        "generator": generators,
        "output_type": "np",
    }
    if "width" in params:
        kwargs.update(width=width, height=height)
    if cfg:
        kwargs["negative_prompt"] = [r.negative_prompt for r in chunk]
    if first.guidance_rescale > 0:
        kwargs["guidance_rescale"] = first.guidance_rescale
    if first.init_image is not None:
        # Resized here with the pipeline's own processor, because some img2img pipelines take
        # their output size from the init image instead of width/height.
        kwargs["image"] = [pipe.image_processor.resize(r.init_image, height, width) for r in chunk]
        kwargs["strength"] = first.strength
    if first.mask_image is not None:
        kwargs["mask_image"] = [pipe.mask_processor.resize(r.mask_image, height, width) for r in chunk]
    rng = contextlib.nullcontext()
    if pipes.ip_adapter_specs:
        kwargs["ip_adapter_image"] = [first.ip_adapter_image or Image.new("RGB", (width, height))]
        if first.ip_adapter_image is None:
            rng = _ip_adapter_off(pipe, pipes)
    if mode.startswith("controlnet"):
        kwargs.update(_control_arguments(pipes, chunk, "control_image" if "control_image" in params else "image"))
        if pipes.family.controlnet_noise_first and mode == "controlnet":
            kwargs["latents"] = _initial_latents(pipes.base, len(chunk), width, height, generators)
        if pipes.family.controlnet_global_rng:
            device = pipe._execution_device
            rng = torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])
    try:
        with rng, torch.inference_mode():
            if pipes.family.controlnet_global_rng and mode.startswith("controlnet"):
                torch.manual_seed(first.seed)
            out = pipe(**kwargs)
    except (RuntimeError, ValueError) as e:
        message = f"{type(e).__name__}: {e}"[:500]
        return [Result(None, message, False, cls.__name__, cfg)] * len(chunk)
    return _to_uint8(np.asarray(out.images, dtype=np.float32), cls.__name__, cfg)


@contextlib.contextmanager
def _ip_adapter_off(pipe: DiffusionPipeline, pipes: PipelineSet):
    """Scale 0 for a call without an image prompt: the image tokens then add exact zeros."""
    pipe.set_ip_adapter_scale(0.0)
    try:
        yield
    finally:
        pipe.set_ip_adapter_scale([s.scale for s in pipes.ip_adapter_specs])


def _initial_latents(
    base: DiffusionPipeline, batch: int, width: int, height: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """The initial noise exactly as the base text-to-image pipeline draws it (packed, for Flux)."""
    transformer = base.transformer
    latents, _ = base.prepare_latents(
        batch,
        transformer.config.in_channels // 4,
        height,
        width,
        transformer.dtype,
        base._execution_device,
        generators,
    )
    return latents
