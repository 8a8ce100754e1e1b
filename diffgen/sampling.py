"""Sampling a batch of records with a loaded pipeline.

Each image has its own CPU `torch.Generator` seeded from its record's seed, so
its pixels do not depend on which batch, actor or device produced it (up to
float round-off). Records that cannot share one pipeline call (different size,
steps or guidance) are split into compatible groups first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch
from diffusers import DiffusionPipeline


@dataclass(frozen=True)
class Request:
    """What one image needs; everything else about it is in the job config."""

    prompt: str
    negative_prompt: str
    seed: int
    guidance_scale: float
    steps: int
    width: int
    height: int

    @property
    def group_key(self) -> tuple[int, int, int, float]:
        return (self.width, self.height, self.steps, self.guidance_scale)


@dataclass(frozen=True)
class Result:
    """An RGB uint8 image (H, W, 3), or the reason there is none."""

    pixels: np.ndarray | None
    error: str | None = None


def _to_uint8(images: np.ndarray) -> list[Result]:
    results = []
    for image in images:
        if not np.isfinite(image).all():
            results.append(Result(None, "non_finite_output: the sampler produced NaN or Inf"))
        else:
            results.append(Result((np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)))
    return results


def generate(pipe: DiffusionPipeline, requests: Sequence[Request], max_batch: int) -> list[Result]:
    """One result per request, in order. A group whose pipeline call raises fails only its own records."""
    results: list[Result | None] = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: requests[i].group_key)
    for key, members in groupby(order, key=lambda i: requests[i].group_key):
        members = list(members)
        for start in range(0, len(members), max_batch):
            chunk = members[start : start + max_batch]
            for i, r in zip(chunk, _call(pipe, [requests[i] for i in chunk], key)):
                results[i] = r
    return results  # type: ignore[return-value]


def _call(pipe: DiffusionPipeline, chunk: list[Request], key: tuple[int, int, int, float]) -> list[Result]:
    width, height, steps, guidance = key
    generators = [torch.Generator("cpu").manual_seed(r.seed) for r in chunk]
    try:
        with torch.inference_mode():
            out = pipe(
                prompt=[r.prompt for r in chunk],
                negative_prompt=[r.negative_prompt for r in chunk] if guidance > 1 else None,
                width=width,
                height=height,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                output_type="np",
            )
    except (RuntimeError, ValueError) as e:
        message = f"{type(e).__name__}: {e}"[:500]
        return [Result(None, message)] * len(chunk)
    return _to_uint8(np.asarray(out.images, dtype=np.float32))
