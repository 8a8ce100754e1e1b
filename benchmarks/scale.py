"""The control plane at scale: what the driver costs per record, with the model replaced by a stand-in.

    python -m benchmarks.scale [--parts driver plan resume] [--sizes 100000 1000000] [--resume-sizes N ..]
                               [--images N] [--quick]

diffgen's driver plans the run (reads and validates the manifest, expands it to one record per image,
finds what the index already holds) and then runs Ray Data's executor, which feeds the actor pools and
collects what the writers return. At 10 million images on 50 GPUs both have to stay small per record.
The diffusion model is replaced by `StandInGenerator`, a benchmark-only generation stage that returns a
deterministic flat image per record in microseconds (never shipped as a model), so that what is
measured is the pipeline around the model.

Parts:
- driver: the generation rounds of a run of `--images` images (stand-in generation → write, QC,
  watermark and C2PA off, one generation actor) at generation batch 4 and 32: the driver process's CPU
  seconds per image (every thread of it: the Ray Data executor runs in the driver), and images/s.
- plan: the pre-flight (`diffgen validate`'s plan: read and validate the manifest, expand, fingerprint)
  on a synthetic manifest of each `--sizes` rows, each size in a fresh process: wall seconds and the
  process's peak RSS, against the RSS after the libraries are imported. A size that runs out of memory
  is recorded as such.
- resume: for each `--resume-sizes`, a committed index of every record of that manifest, as a finished run
  leaves it (built in its own process from the plan's records, 250,000 rows a shard), then the pre-flight
  of the same job again in a fresh process: it reads the index and finds nothing to make. Wall seconds
  and peak RSS, as for plan.

Results: benchmarks/results/scale-cpu-<machine>.json (with --quick: out/benchmarks/), with a
log-log chart of plan time and peak RSS against rows beside it (.svg), and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.machine import machine, machine_slug, versions
from benchmarks.results import result_path, write_result

BATCHES = (4, 32)
SIZES = (100_000, 1_000_000)
RESUME_SIZES = (100_000, 1_000_000)
ROW_GROUP_ROWS = 128 * 1024
PLAN_TIMEOUT_S = 1800


class StandInGenerator:
    """Benchmark only: the generation stage's column contract (`GenerateStage.adds`) with a flat image
    whose grey level comes from the record's seed, made in microseconds; constructed as the pipeline
    constructs its generation actors, with (spec, failures)."""

    adds = (
        "pixels", "status", "error", "replaceable", "cfg", "pipeline_class", "init_image_sha256",
        "mask_image_sha256", "control_image_uris", "control_image_sha256", "prompt_truncated", "prompt_truncation",
        "ip_adapter_image_sha256",
    )  # fmt: skip

    def __init__(self, spec, failures):
        self.spec = spec

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        seeds = batch.column("seed").to_pylist()
        widths, heights = batch.column("width").to_pylist(), batch.column("height").to_pylist()
        pixels = [np.full((h, w, 3), s % 251, np.uint8).tobytes() for s, w, h in zip(seeds, widths, heights)]
        nulls = pa.nulls(n, pa.string())
        columns = {
            "pixels": pa.array(pixels, pa.binary()),
            "status": nulls,
            "error": nulls,
            "replaceable": pa.nulls(n, pa.bool_()),
            "cfg": pa.array([True] * n, pa.bool_()),
            "pipeline_class": pa.array(["StandInGenerator"] * n, pa.string()),
            "init_image_sha256": nulls,
            "mask_image_sha256": nulls,
            "control_image_uris": pa.nulls(n, pa.list_(pa.string())),
            "control_image_sha256": pa.nulls(n, pa.list_(pa.string())),
            "prompt_truncated": pa.array([False] * n, pa.bool_()),
            "prompt_truncation": nulls,
            "ip_adapter_image_sha256": nulls,
        }
        for name in self.adds:
            batch = batch.append_column(name, columns[name])
        return batch


PROMPTS = ("a red circle", "a blue square in the top left", "a green star", "a yellow triangle at the bottom")


def write_manifest(path: Path, rows: int, *, row_group_rows: int = ROW_GROUP_ROWS) -> Path:
    """A seeded synthetic manifest of `rows` one-image rows (id, prompt, label), written a row group at a time."""
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("label", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group_rows):
            stop = min(rows, start + row_group_rows)
            index = np.arange(start, stop)
            ids = pa.array([f"row-{i:09d}" for i in index.tolist()], pa.string())
            prompts = pa.array(np.array(PROMPTS, dtype=object)[index % len(PROMPTS)], pa.string())
            labels = pa.array(np.array(("circle", "square", "star", "triangle"), dtype=object)[index % 4], pa.string())
            writer.write_table(pa.table([ids, prompts, labels], schema=schema))
    return path


def _job(model: Path, manifest: Path, output: Path, *, batch: int, run_id: str) -> dict:
    return {
        "run_id": run_id,
        "model": {"id": str(model)},
        "sampler": {"width": 64, "height": 64, "steps": 1},
        "compute": {"num_actors": 1, "batch_size": batch, "threads_per_actor": 1, "device": "cpu"},
        "provenance": {"watermark": False},
        "manifest": str(manifest),
        "output": str(output),
    }


def _model_folder(root: Path) -> Path:
    """The tiny SD folder under `root`, built by the first caller (the driver part and every child share it)."""
    from lab.builders.tiny import build_tiny_sd

    folder = root / "tiny-sd"
    return folder if (folder / "model_index.json").is_file() else build_tiny_sd(folder)


def measure_driver(root: Path, images: int, batch: int) -> dict:
    """One run's generation rounds (stand-in generation, writes): the driver's CPU seconds and the wall time."""
    from ray import cloudpickle

    from diffgen.dataset.lease import hold_lease
    from diffgen.pipelines.cluster import connect
    from diffgen.pipelines.generate import generate_rounds
    from diffgen.pipelines.plan import plan
    from diffgen.schemas.job import JobSpec

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need no PYTHONPATH for the stand-in
    manifest = root / f"manifest-{images}.parquet"
    if not manifest.is_file():
        write_manifest(manifest, images)
    output = root / f"out-{images}-batch-{batch}"
    job = _job(_model_folder(root), manifest, output, batch=batch, run_id=f"scale-{images}-{batch}")
    spec = JobSpec.model_validate(job)
    connect()
    p = plan(spec)
    cpu, wall = time.process_time(), time.perf_counter()
    with hold_lease(p.output, p.run_id) as lease:
        generate_rounds(p, lease, generator=StandInGenerator)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "batch_size": batch,
        "images": images,
        "written": sum(1 for _ in output.joinpath("images").rglob("*.png")),
        "driver_cpu_s": round(cpu, 3),
        "wall_s": round(wall, 2),
    }


def driver_part(root: Path, images: int, batches: list[int]) -> list[dict]:
    """Per batch size, a run of images/4 and one of `images`: the driver's CPU per image over the whole
    run and its marginal cost (the difference of the two runs over the difference in images), which
    leaves out what a run pays once (Ray Data's start, the actors' start, the last batch's drain)."""
    rows = []
    for batch in batches:
        small, large = measure_driver(root, images // 4, batch), measure_driver(root, images, batch)
        extra = large["images"] - small["images"]
        rows.append({
            "batch_size": batch,
            "runs": [small, large],
            "driver_cpu_ms_per_image": round(1000 * large["driver_cpu_s"] / large["images"], 3),
            "marginal_driver_cpu_ms_per_image": round(1000 * (large["driver_cpu_s"] - small["driver_cpu_s"]) / extra, 3),
            "marginal_images_per_s": round(extra / max(large["wall_s"] - small["wall_s"], 1e-9), 1),
        })  # fmt: skip
    return rows


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _plan_spec(root: Path, rows: int, output: Path):
    from diffgen.schemas.job import JobSpec

    manifest = root / f"manifest-{rows}.parquet"
    if not manifest.is_file():
        write_manifest(manifest, rows)
    return JobSpec.model_validate(_job(_model_folder(root), manifest, output, batch=32, run_id=f"scale-plan-{rows}"))


def plan_child(root: Path, rows: int, output: Path | None = None) -> dict:
    """In a fresh process: the pre-flight on a `rows`-row manifest (against the committed index in
    `output`, when given); wall seconds and peak RSS."""
    from diffgen.pipelines.plan import plan

    spec = _plan_spec(root, rows, output or root / f"plan-out-{rows}")
    baseline = _rss_mb()
    started = time.perf_counter()
    p = plan(spec, probe_output=False)
    wall = time.perf_counter() - started
    return {
        "rows": rows,
        "records": p.records.num_rows,
        "to_make": p.todo.num_rows,
        "plan_s": round(wall, 2),
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_after_imports_mb": round(baseline, 1),
    }


INDEX_SHARD_ROWS = 250_000


def build_index(root: Path, rows: int) -> dict:
    """In a fresh process: a committed index of every record of a `rows`-row manifest, as a finished
    run leaves it (each record written, with its fingerprint), in shards of `INDEX_SHARD_ROWS`."""
    from datetime import UTC, datetime

    from diffgen.dataset import storage
    from diffgen.dataset.layout import index_shard
    from diffgen.pipelines.plan import plan
    from diffgen.schemas.record import INDEX_SCHEMA

    output = root / f"resume-out-{rows}"
    records = plan(_plan_spec(root, rows, output), probe_output=False).records
    started = time.perf_counter()
    n = records.num_rows
    fill = {"status": pa.array(["written"] * n, pa.string()),
            "created_at": pa.array([datetime.now(UTC)] * n, INDEX_SCHEMA.field("created_at").type),
            "image_uri": pc.binary_join_element_wise(str(output) + "/images/", records.column("record_id"), ".png", "")}  # fmt: skip
    columns = []
    for field in INDEX_SCHEMA:
        if field.name in fill:
            columns.append(fill[field.name])
        elif field.name in records.column_names:
            columns.append(records.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    index = pa.Table.from_arrays(columns, schema=INDEX_SCHEMA).append_column("label", records.column("label"))
    for start in range(0, n, INDEX_SHARD_ROWS):
        shard = index.slice(start, INDEX_SHARD_ROWS)
        storage.write_parquet(shard, str(output / index_shard(shard.column("record_id").to_pylist())))
    return {"rows": rows, "index_rows": n, "build_s": round(time.perf_counter() - started, 1)}


def _child(*args: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.scale", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PLAN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {PLAN_TIMEOUT_S} s"}
    if done.returncode != 0:
        killed = done.returncode in (-9, 137)
        return {"failed": "killed (out of memory)" if killed else done.stderr.strip()[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_plan(root: Path, rows: int) -> dict:
    return {"rows": rows, **_child("--plan-child", str(rows), "--root", str(root))}


def measure_resume(root: Path, rows: int) -> dict:
    """The pre-flight of a run resumed over a finished output: every record committed, none to make."""
    built = _child("--build-index", str(rows), "--root", str(root))
    if "failed" in built:
        return {"rows": rows, "build": built}
    output = root / f"resume-out-{rows}"
    return {"rows": rows, "index_rows": built["index_rows"],
            **_child("--plan-child", str(rows), "--root", str(root), "--output", str(output))}  # fmt: skip


def loglog_svg(points: dict[str, list[tuple[float, float]]], *, x_label: str, y_label: str, title: str) -> str:
    """A small log-log line chart (one line per series) as SVG text."""
    width, height, pad = 520, 320, 60
    xs = [x for series in points.values() for x, _ in series]
    ys = [y for series in points.values() for _, y in series]
    if not xs:
        return ""
    lx0, lx1 = np.log10(min(xs)), np.log10(max(xs))
    ly0, ly1 = np.log10(min(ys)), np.log10(max(ys))
    lx1, ly1 = max(lx1, lx0 + 1), max(ly1, ly0 + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        px = pad + (np.log10(x) - lx0) / (lx1 - lx0) * (width - 2 * pad)
        py = height - pad - (np.log10(y) - ly0) / (ly1 - ly0) * (height - 2 * pad)
        return round(float(px), 1), round(float(py), 1)

    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
              f'font-size="11"><text x="{width // 2}" y="18" text-anchor="middle" font-size="13">{title}</text>'),
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
             f'<text x="{width // 2}" y="{height - 15}" text-anchor="middle">{x_label} (log)</text>',
             (f'<text x="15" y="{height // 2}" transform="rotate(-90 15 {height // 2})" text-anchor="middle">'
              f"{y_label} (log)</text>")]  # fmt: skip
    for i, (name, series) in enumerate(points.items()):
        color = colors[i % len(colors)]
        coords = [at(x, y) for x, y in sorted(series)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{" ".join(f"{x},{y}" for x, y in coords)}"/>')  # fmt: skip
        for (x, y), (px, py) in zip(sorted(series), coords):
            parts.append(f'<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>')
            parts.append(f'<text x="{px + 4}" y="{py - 4}">{y:g}</text>')
        parts.append(f'<text x="{width - pad - 150}" y="{pad + 14 * i}" fill="{color}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("driver", "plan", "resume"),
                        default=["driver", "plan", "resume"])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="manifest rows for the plan part")
    parser.add_argument("--images", type=int, default=4096, help="images of the driver part's run")
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes; results under out/benchmarks/")
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--plan-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--build-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--resume-sizes", nargs="+", type=int, default=list(RESUME_SIZES),
                        help="committed index rows for the resume part")
    args = parser.parse_args(argv)
    from benchmarks.environment import prepare_environment

    prepare_environment()
    if args.plan_child is not None:
        output = Path(args.output) if args.output else None
        print(json.dumps(plan_child(Path(args.root), args.plan_child, output)))
        return 0
    if args.build_index is not None:
        print(json.dumps(build_index(Path(args.root), args.build_index)))
        return 0
    if args.quick:
        args.sizes, args.images = sorted({min(s, 20_000) for s in args.sizes}), min(args.images, 256)
        args.resume_sizes = sorted({min(s, 20_000) for s in args.resume_sizes})
    started, t0 = datetime.now(UTC), time.perf_counter()
    result: dict = {
        "benchmark": "scale: the driver's cost per record with a stand-in model (issue #23)",
        "quick": args.quick,
        "command": "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
    }
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = Path(tmp)
        if "plan" in args.parts:
            result["plan"] = [measure_plan(root, rows) for rows in sorted(args.sizes)]
            for row in result["plan"]:
                print(json.dumps(row))
        if "resume" in args.parts:
            result["resume"] = [measure_resume(root, rows) for rows in sorted(args.resume_sizes)]
            for row in result["resume"]:
                print(json.dumps(row))
        if "driver" in args.parts:
            result["driver"] = driver_part(root, args.images, args.batches)
            for row in result["driver"]:
                print(json.dumps(row))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out = result_path("scale", "cpu", machine_slug(result["machine"], gpu=False), args.quick)
    write_result(result, out)
    plans = [r for r in result.get("plan", []) if "failed" not in r]
    if plans:
        svg = loglog_svg({"plan seconds": [(r["rows"], r["plan_s"]) for r in plans],
                          "peak RSS (MB)": [(r["rows"], r["peak_rss_mb"]) for r in plans]},
                         x_label="manifest rows", y_label="value", title="diffgen plan: cost against rows")  # fmt: skip
        out.with_suffix(".svg").write_text(svg)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
