"""diffgen's generate, QC and write stages timed one by one in this process, on 1 thread, without Ray."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import torch

from diffgen.schemas.job import JobSpec, load_job_spec


def stage_seconds_per_image(spec: JobSpec, images: int) -> dict[str, float]:
    """Seconds per image of each stage over the plan's first `images` records: generation in the job's
    batches, then QC and write in the pipeline's larger batches (as `score_and_write_rows` sizes them)."""
    from diffgen.pipelines.generate import score_and_write_rows
    from diffgen.pipelines.plan import plan
    from diffgen.stages.generate import GenerateStage
    from diffgen.stages.qc import QcStage
    from diffgen.stages.write import WriteStage

    p = plan(spec)
    todo = p.todo.slice(0, images)
    stages = {"generate": GenerateStage(spec), "qc": QcStage(spec.qc),
              "write": WriteStage(spec, p.output, p.run_id, p.credentials)}  # fmt: skip
    for stage in stages.values():
        stage.setup()
    seconds = dict.fromkeys(stages, 0.0)
    generated = []
    for start in range(0, todo.num_rows, spec.compute.batch_size):
        t = time.perf_counter()
        generated.append(stages["generate"](todo.slice(start, spec.compute.batch_size)))
        seconds["generate"] += time.perf_counter() - t
    generated = pa.concat_tables(generated)
    rows = score_and_write_rows(spec.compute)
    for start in range(0, generated.num_rows, rows):
        batch = generated.slice(start, rows)
        for name in ("qc", "write"):
            t = time.perf_counter()
            batch = stages[name](batch)
            seconds[name] += time.perf_counter() - t
    return {f"{name}_s_per_image": round(s / todo.num_rows, 5) for name, s in seconds.items()}


def profile_stages(job: Path, manifest: Path, work: Path, images: int) -> dict:
    """Seconds per image for each stage with the watermark on and off, and what the CPU stages cost
    next to generation on the same cores."""
    torch.set_num_threads(1)
    out: dict = {"images": images, "threads": 1}
    for watermark in (True, False):
        spec = load_job_spec(
            job,
            manifest=str(manifest),
            output=str(work / f"profile-{watermark}"),
            overrides=["compute.threads_per_actor=1", f"provenance.watermark={str(watermark).lower()}"],
        )
        out["watermark_on" if watermark else "watermark_off"] = stage_seconds_per_image(spec, images)
    on, off = out["watermark_on"], out["watermark_off"]
    out["watermark_embed_and_check_s_per_image"] = round(on["write_s_per_image"] - off["write_s_per_image"], 5)
    out["cpu_stages_over_generate"] = round(
        (on["qc_s_per_image"] + on["write_s_per_image"]) / on["generate_s_per_image"], 4
    )
    return out
