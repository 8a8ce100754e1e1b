"""A pipeline variant: `diffgen.jobs.api.run` on its own Ray, its rate read from the index's write stamps."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.gpu_timing import NvmlSampler
from benchmarks.measurement import Measurement, rounded, steady_rate
from benchmarks.process_cpu import ProcessCpu
from benchmarks.variants import Variant


def pipeline_overrides(variant: Variant) -> list[str]:
    """The job overrides that make the pipeline run as `variant`."""
    overrides = [
        f"compute.num_actors={variant.actors}",
        f"qc.enabled={str(variant.qc).lower()}",
        f"provenance.watermark={str(variant.watermark).lower()}",
        f"run_id=bench-{variant.name}",
    ]
    if variant.threads is not None:
        overrides.append(f"compute.threads_per_actor={variant.threads}")
    if not variant.helper_niceness:
        overrides.append("compute.helper_niceness=null")
    return overrides


def _nvml_sampler() -> NvmlSampler | None:
    try:
        return NvmlSampler()
    except Exception as e:  # noqa: BLE001 - pynvml missing or NVML unusable: the estimate stands alone
        print(f"    (no NVML sampling: {type(e).__name__}: {e})", flush=True)
        return None


def run_pipeline(
    job: Path, base_overrides: list[str], manifest: Path, output: str, variant: Variant, gpu: bool
) -> Measurement:
    """Ray is stopped before and after, so the end-to-end time includes Ray's start, the actors' start and
    model load, compaction, the QC report and run.json. CPU mode samples CPU seconds per process role."""
    import ray

    from diffgen.dataset.index import read_index
    from diffgen.jobs.api import RunError, run

    if ray.is_initialized():
        ray.shutdown()
    sampler = _nvml_sampler() if gpu else None
    overrides = [*base_overrides, *pipeline_overrides(variant)]
    cpu = None if gpu else ProcessCpu()
    t0 = time.perf_counter()
    try:
        summary = run(job, manifest=str(manifest), output=output, overrides=overrides).summary
    except RunError as e:  # a partial run is still measured
        summary = getattr(e, "summary", None)
        if summary is None:
            raise
    wall = time.perf_counter() - t0
    cpu_profile = cpu.stop() if cpu is not None else None
    ray.shutdown()
    if sampler is not None:
        sampler.stop()
    index = read_index(output)
    created = [t.timestamp() for t in index.column("created_at").to_pylist()]
    stamps = sorted(Counter(created).items())
    rate, window, first_half = steady_rate(stamps)
    extra: dict = {
        "status": summary.status,
        "counts": summary.counts.model_dump(),
        "index_statuses": dict(Counter(index.column("status").to_pylist())),
        "steady_first_half_images_per_s": rounded(first_half),
        "run_json_wall_time_s": summary.wall_time_s,
        "overrides": overrides,
        # Seconds after the first write call, and the images each wrote: the run's timeline.
        "write_stamps": [[round(t - stamps[0][0], 3), n] for t, n in stamps],
    }
    if cpu_profile is not None:
        extra["cpu_profile"] = cpu_profile
    if sampler is not None and len(stamps) > 1:
        extra["gpu_busy_fraction_nvml"] = sampler.mean_between(stamps[0][0], stamps[-1][0])
    extra["_index"] = index
    n = index.num_rows
    return Measurement(variant.name, n, round(wall, 3), round(n / wall, 4), rounded(rate), round(window, 3),
                       len(stamps), extra)  # fmt: skip


def same_images(bare: Measurement, pipeline: Measurement) -> dict:
    """The bare loop's first batch against the pipeline's PNGs of the same rows: the same work was done."""
    from diffgen.dataset import storage
    from diffgen.provenance.png import decode_png

    index = pipeline.extra["_index"]
    uris = dict(zip(index.column("id").to_pylist(), index.column("image_uri").to_pylist()))
    diffs = []
    for row_id, pixels in bare.extra["_first_images"].items():
        if uris.get(row_id):
            written, _ = decode_png(storage.read_bytes(uris[row_id]))
            diffs.append(int(np.abs(written.astype(np.int16) - pixels.astype(np.int16)).max()))
    return {"compared_with": pipeline.variant, "images": len(diffs), "max_abs_diff_levels": max(diffs, default=None)}
