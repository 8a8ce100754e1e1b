"""The yardstick: a plain diffusers loop over the benchmark's rows, with the job's model and settings."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_timing import UnetTimer
from benchmarks.measurement import Measurement, rounded, steady_rate
from benchmarks.variants import Variant
from diffgen.schemas.job import JobSpec, SamplerSpec


def load_bare_pipeline(spec: JobSpec, gpu: bool):
    """The pipeline class named by the folder's model_index.json, loaded with `from_pretrained`, with the
    job's scheduler, on the job's dtype on the GPU (float32 on the CPU), channels-last if the job says so."""
    import diffusers

    from diffgen.generation.loading import DTYPES
    from diffgen.generation.schedulers import SCHEDULERS

    sampler, compute = spec.sampler, spec.compute
    device = torch.device("cuda" if gpu else "cpu")
    dtype = DTYPES[compute.dtype] if gpu else torch.float32
    folder = Path(spec.model.id)
    class_name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    # SDXL pipelines add their own watermark when invisible-watermark is installed; diffgen turns it off.
    kwargs = {"add_watermarker": False} if "XL" in class_name else {}
    pipe = getattr(diffusers, class_name).from_pretrained(str(folder), dtype=dtype, local_files_only=True, **kwargs)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if sampler.scheduler != "default":
        scheduler_cls, overrides = SCHEDULERS[sampler.scheduler]
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **overrides)
    if compute.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    return pipe


def call_arguments(sampler: SamplerSpec, chunk: list[dict]) -> dict:
    """One pipeline call over a batch of rows: one CPU torch.Generator per image, as diffgen seeds them."""
    call = {
        "prompt": [r["prompt"] for r in chunk],
        "num_inference_steps": sampler.steps,
        "guidance_scale": sampler.guidance_scale,
        "width": sampler.width,
        "height": sampler.height,
        "generator": [torch.Generator("cpu").manual_seed(r["seed"]) for r in chunk],
        "output_type": "np",
    }
    if sampler.guidance_scale > 1:
        call["negative_prompt"] = [sampler.negative_prompt] * len(chunk)
    return call


def _unet_busy(timer: UnetTimer | None, unet_seconds: list[float], stamps: list[tuple[float, int]]) -> dict:
    if timer is None or len(unet_seconds) < 2:
        return {}
    # After the first batch, which pays for compilation and autotuning.
    images_after_first = sum(n for _, n in stamps[1:])
    return {
        "unet_gpu_s_per_image": round(sum(unet_seconds[1:]) / images_after_first, 5),
        "gpu_busy_fraction_unet": round(sum(unet_seconds[1:]) / (stamps[-1][0] - stamps[0][0]), 4),
    }


def run_bare(spec: JobSpec, rows: list[dict], variant: Variant, gpu: bool) -> Measurement:
    """Times loading and the loop; a stamp when each batch's uint8 images are ready. The first batch's
    images go into `extra["_first_images"]` for the same-images check."""
    if variant.threads is not None:
        torch.set_num_threads(variant.threads)
    t0 = time.perf_counter()
    pipe = load_bare_pipeline(spec, gpu)
    timer = UnetTimer(pipe.unet) if gpu else None
    if gpu and spec.compute.torch_compile:
        pipe.unet.compile(fullgraph=False, dynamic=False)
    loaded = time.perf_counter()
    stamps: list[tuple[float, int]] = []
    unet_seconds: list[float] = []
    first_images: dict[str, np.ndarray] = {}
    for start in range(0, len(rows), spec.compute.batch_size):
        chunk = rows[start : start + spec.compute.batch_size]
        call = call_arguments(spec.sampler, chunk)
        with torch.inference_mode():
            out = pipe(**call).images
        pixels = (np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
        stamps.append((time.perf_counter(), len(chunk)))
        if timer is not None:
            unet_seconds.append(timer.collect())
        if start == 0:
            first_images = {r["id"]: p for r, p in zip(chunk, pixels)}
    end = time.perf_counter()
    rate, window, first_half = steady_rate(stamps)
    extra: dict = {
        "load_s": round(loaded - t0, 3),
        "loop_s": round(end - loaded, 3),
        "threads": torch.get_num_threads(),
        "steady_first_half_images_per_s": rounded(first_half),
        "parameters": {name: sum(p.numel() for p in module.parameters())
                       for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)},
        "attention_processors": sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()}),
        **_unet_busy(timer, unet_seconds, stamps),
        "_first_images": first_images,
    }  # fmt: skip
    del pipe
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    n = len(rows)
    return Measurement(variant.name, n, round(end - t0, 3), round(n / (end - t0), 4), rounded(rate), round(window, 3),
                       len(stamps), extra)  # fmt: skip


def _bare_process(spec_json: str, rows: list[dict], variant: Variant) -> Measurement:
    m = run_bare(JobSpec.model_validate_json(spec_json), rows, variant, False)
    m.extra.pop("_first_images", None)
    return m


def run_bare_processes(spec: JobSpec, rows: list[dict], variant: Variant) -> Measurement:
    """`variant.actors` bare loops at once, one process each on `variant.threads` threads, each over its
    share of the rows: what the cores give several generators with nothing else running (the yardstick
    for the actor variants). Rates add up; the wall time is the slowest process's."""
    import multiprocessing

    shares = [rows[i :: variant.actors] for i in range(variant.actors)]
    with multiprocessing.get_context("spawn").Pool(variant.actors) as pool:
        parts = pool.starmap(_bare_process, [(spec.model_dump_json(), share, variant) for share in shares])
    wall = max(m.e2e_wall_s for m in parts)
    steady = [m.steady_images_per_s for m in parts]
    extra = {"processes": [{"images": m.images, "e2e_wall_s": m.e2e_wall_s,
                            "steady_images_per_s": m.steady_images_per_s} for m in parts]}  # fmt: skip
    return Measurement(variant.name, len(rows), wall, round(len(rows) / wall, 4),
                       None if None in steady else round(sum(steady), 4), min(m.steady_window_s for m in parts),
                       sum(m.stamps for m in parts), extra)  # fmt: skip
