"""The results file: what it records, and where it goes."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.paths import QUICK_RESULTS, RESULTS
from benchmarks.ratios import TARGETS
from diffgen.schemas.job import JobSpec

# The `benchmark` of benchmarks.pipeline's and benchmarks.gpu's results files; the questions' add their question.
PIPELINE_BENCHMARK = "pipeline vs bare diffusers loop (issue #8)"
METHOD = {
    "e2e_images_per_s": "images / wall time of the whole call: bare = from_pretrained + loop (libraries already "
    "imported); pipeline = diffgen.jobs.api.run with Ray stopped before, so Ray start, worker imports, actor start and "
    "model load, compaction, QC report and run.json are inside",
    "steady_images_per_s": "least-squares slope of cumulative images against the time each batch was done, over "
    "the second half of the images: pipeline = the index's created_at (one stamp per write call, taken when the "
    "write stage receives a batch, after generation and QC); bare = when each batch's uint8 images are ready. "
    "Fixed costs and the backlog a late-starting write worker drains fall in the first half; "
    "steady_first_half_images_per_s well above it says the run was too short",
    "aggregation": "each variant runs `repeats` times, interleaved; medians are reported and every run is listed",
    "ratios": "steady rates; e2e ratios alongside",
    "stage_profile": "diffgen's GenerateStage, QcStage and WriteStage called in the driver on 1 thread without "
    "Ray, on the first images of the same manifest, with the watermark on and off",
}


def settings_of(spec: JobSpec, images: int, repeats: int) -> dict:
    """The job settings every variant of a block shares."""
    s, c = spec.sampler, spec.compute
    return {
        "model": spec.model.id,
        "scheduler": s.scheduler,
        "steps": s.steps,
        "guidance_scale": s.guidance_scale,
        "classifier_free_guidance": s.guidance_scale > 1,
        "negative_prompt": s.negative_prompt,
        "width": s.width,
        "height": s.height,
        "batch_size": c.batch_size,
        "dtype": c.dtype,
        "device": c.device,
        "channels_last": c.channels_last,
        "torch_compile": c.torch_compile,
        "gpus_per_actor": c.gpus_per_actor,
        "qc_when_on": spec.qc.model_dump(mode="json"),
        "provenance_when_on": spec.provenance.model_dump(mode="json"),
        "images_per_variant": images,
        "repeats": repeats,
        "prompts": f"{spec.manifest} rows repeated to {images} one-image rows with distinct ids and seeds",
    }


def result_document(
    *, benchmark: str, mode: str, quick: bool, command: str, started: str, wall_s: float, machine: dict,
    versions: dict, models: dict,
) -> dict:
    """The results file's fields, in the order every committed results file has them."""
    return {
        "benchmark": benchmark,
        "mode": mode,
        "quick": quick,
        "command": command,
        "created_at": started,
        "session_wall_s": round(wall_s, 1),
        "machine": machine,
        "versions": versions,
        "method": METHOD,
        "targets": TARGETS,
        "models": models,
    }  # fmt: skip


def result_path(name: str, mode: str, slug: str, quick: bool) -> Path:
    """benchmarks/results/<name>-<mode>-<machine>.json; with --quick, under out/benchmarks/."""
    return (QUICK_RESULTS if quick else RESULTS) / f"{name}-{mode}-{slug}.json"


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
