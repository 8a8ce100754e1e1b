"""A session: every variant `repeats` times, interleaved, in this process, over one manifest; and the
medians of its runs."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bare_loop import run_bare, run_bare_processes
from benchmarks.loopback_s3 import s3_output, start_s3
from benchmarks.measurement import Measurement
from benchmarks.pipeline_run import run_pipeline, same_images
from benchmarks.stage_timing import profile_stages
from benchmarks.variants import Kind, Output, Variant
from diffgen.schemas.job import JobSpec, load_job_spec


def ensure_model(spec: JobSpec) -> None:
    """The job's model folder must exist (the embedded default, models/micro-sd, is committed)."""
    folder = Path(spec.model.id)
    if not (folder / "model_index.json").is_file():
        raise SystemExit(f"model folder {folder} has no model_index.json")


def benchmark_manifest(spec: JobSpec, images: int, folder: Path) -> tuple[Path, list[dict]]:
    """N one-image rows: the job's manifest rows repeated, each with its own id and seed."""
    base = pq.read_table(spec.manifest).to_pylist()
    rows = []
    for i in range(images):
        row = dict(base[i % len(base)])
        row.update(id=f"bench-{i:06d}", num_images=1, seed=10_000 + i)
        rows.append(row)
    path = folder / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(spec.manifest)), path)
    return path, rows


@dataclass
class Session:
    spec: JobSpec
    runs: dict[str, list[Measurement]]
    same_images: dict
    profile: dict | None


@dataclass(frozen=True)
class Inputs:
    """What every variant of a session runs on."""

    job: Path
    base_overrides: list[str]
    spec: JobSpec
    manifest: Path
    rows: list[dict]
    work: Path
    gpu: bool


def run_variant(inputs: Inputs, v: Variant, repeat: int) -> Measurement:
    if v.kind == Kind.BARE and v.actors > 1:
        return run_bare_processes(inputs.spec, inputs.rows, v)
    if v.kind == Kind.BARE:
        return run_bare(inputs.spec, inputs.rows, v, inputs.gpu)
    output = s3_output() if v.output == Output.S3 else str(inputs.work / f"out-{v.name}-{repeat}")
    return run_pipeline(inputs.job, inputs.base_overrides, inputs.manifest, output, v, inputs.gpu)


def session(
    variants: list[Variant],
    job: Path,
    base_overrides: list[str],
    images: int,
    repeats: int,
    work: Path,
    *,
    gpu: bool,
    profile_images: int = 0,
) -> Session:
    """The stage profile first (when `profile_images`), then every variant `repeats` times, interleaved:
    each round in the listed order. After the first round, the bare loop's first batch is compared with
    the pipeline's images of the same rows."""
    import ray

    spec = load_job_spec(job, overrides=base_overrides)
    ensure_model(spec)
    manifest, rows = benchmark_manifest(spec, images, work)
    profile = None
    if profile_images:
        print(f"profile: diffgen's stages in this process, 1 thread, {profile_images} images", flush=True)
        profile = profile_stages(job, manifest, work, profile_images)
    ray.data.DataContext.get_current().enable_progress_bars = False
    inputs = Inputs(job, base_overrides, spec, manifest, rows, work, gpu)
    server = start_s3() if any(v.output == Output.S3 for v in variants) else None
    runs: dict[str, list[Measurement]] = {v.name: [] for v in variants}
    checks: dict = {}
    try:
        for r in range(repeats):
            for v in variants:
                print(f"[{r + 1}/{repeats}] {v.name}: {v.description}", flush=True)
                m = run_variant(inputs, v, r)
                print(f"    e2e {m.e2e_wall_s:.1f} s ({m.e2e_images_per_s:.3f} img/s), "
                      f"steady {m.steady_images_per_s} img/s", flush=True)  # fmt: skip
                runs[v.name].append(m)
            if r == 0 and runs.get("bare"):
                compare = "no-watermark" if runs.get("no-watermark") else "pipeline"
                if runs.get(compare):
                    checks = same_images(runs["bare"][0], runs[compare][0])
    finally:
        if server is not None:
            server.stop()
    return Session(spec, runs, checks, profile)


def _runs(ms: list[Measurement]) -> list[dict]:
    return [
        {
            "e2e_wall_s": m.e2e_wall_s,
            "e2e_images_per_s": m.e2e_images_per_s,
            "steady_images_per_s": m.steady_images_per_s,
            "steady_window_s": m.steady_window_s,
            "stamps": m.stamps,
            **{k: val for k, val in m.extra.items() if not k.startswith("_")},
        }
        for m in ms
    ]


def summarise(runs: dict[str, list[Measurement]], variants: list[Variant]) -> dict[str, dict]:
    """Per variant that ran: its settings, the medians over its runs, and every run."""
    from diffgen.stages.generate import default_cpu_threads

    out = {}
    by_name = {v.name: v for v in variants}
    for name, ms in runs.items():
        if not ms:
            continue
        v = by_name[name]
        steady = [m.steady_images_per_s for m in ms if m.steady_images_per_s is not None]
        out[name] = {
            **{k: val for k, val in asdict(v).items() if k != "name"},
            **({"default_threads": default_cpu_threads(v.actors)}
               if v.kind == Kind.PIPELINE and v.threads is None else {}),
            "images": ms[0].images,
            "e2e_wall_s": round(statistics.median(m.e2e_wall_s for m in ms), 3),
            "e2e_images_per_s": round(statistics.median(m.e2e_images_per_s for m in ms), 4),
            "steady_images_per_s": round(statistics.median(steady), 4) if steady else None,
            "runs": _runs(ms),
        }  # fmt: skip
    return out
