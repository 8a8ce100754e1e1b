"""What the utility score says on the micro-world example, and what it and the extra distribution metrics cost.

    python -m benchmarks.utility [--parts example cost] [--guidance G,..] [--images N] [--steps S] [--repeats R]

Both parts run examples/utility/job.yaml through diffgen's Python API (the embedded models/micro-sd, the micro
CLIP as QC backbone and FID backbone, FID grouped by `label` = the shape), each on its own Ray:

  example  `make demo-utility`'s sweep (--guidance, default 1.5,3,5,7.5) of the job as committed: 128 images
           (32 per shape) per point, QC on, `qc.utility` on the 200 real renders in examples/utility/real/ (25 of
           each shape's 50 held out as the test set). Each point's qc/utility.json gives the accuracy on the real
           test renders of a probe trained on the synthetic images, of one trained on real renders (as many per
           shape, capped by the training pool: 25), the synthetic/real ratio and the augmentation gain at
           `few_shot` (10) real per shape, each with its bootstrap 95 % interval (over the test renders; the
           choice of the 10 training renders is one seeded draw), and the distribution metrics.
  cost     the same job on N images (default 1,000: the example's rows repeated with distinct ids, so
           distinct seeds), two variants side by side, interleaved with --repeats:
             qc           QC on (CLIP score, checks, FID per shape) with `qc.sample_size=0` and no `qc.utility`
             qc+utility   the same with the feature samples (default 10,000 per group) that KID, CMMD and
                          precision/recall/density/coverage use, and `qc.utility`
           Reported: each run's wall time (Ray start to run.json) and CPU seconds (the driver and its
           descendants: the run's own Ray processes, not other work on the machine), the differences, and,
           inside the qc+utility run, the driver's time in the two added steps (the utility score and the
           distribution metrics), timed around the functions the pipeline calls. On a shared machine wall
           time carries the noise of other work; the CPU seconds and the timed steps much less. The QC
           actors' reservoir updates (a hash and a heap per image) show only in the whole-run differences. The
           reference sample is embedded once and cached beside the reference (a warm-up run fills the cache).

  stage    the QC stage alone (no Ray, no generation) on N images (the real renders as pixels), with and
           without the samples and the label column, called in turn on the same batches: CPU seconds of each
           (`time.process_time`), so the machine's load drifts out. Its added seconds plus the cost part's timed
           steps, over the qc run's wall time, is the added share counted piece by piece.

`--steps` lowers the sampler's steps for the cost part only (fewer steps: cheaper generation, so the added
share is larger, not smaller, than at the example's 20). The model is named in the results by its weights'
hash and training date: rerun the command after models/micro-sd changes.

Results: benchmarks/results/utility-<part>-cpu-<machine>.json, one per part
(with --quick: out/benchmarks/), and each part's numbers on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.environment import prepare_environment
from benchmarks.machine import machine, machine_slug, versions
from benchmarks.paths import QUICK_RESULTS, REPO, RESULTS
from benchmarks.process_cpu import ProcessCpu

JOB = REPO / "examples" / "utility" / "job.yaml"
MODEL = REPO / "models" / "micro-sd"
QUESTIONS = {
    "example": "synthetic-trained vs real-trained probe on the micro-world example, and the augmentation gain",
    "cost": "what utility and the extra distribution metrics add to a QC-enabled run's wall time",
    "stage": "what the feature samples add to the QC stage's own CPU time per image",
}
VARIANTS = {
    "qc": ["qc.sample_size=0", "qc.utility=null"],
    "qc+utility": [],
}


def model_identity(folder: Path = MODEL) -> dict:
    """Which micro-sd the numbers are from: its UNet weights' hash and its training record's date."""
    weights = sorted((folder / "unet").glob("*.safetensors"))
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest()[:16] if weights else None
    training = folder / "training.json"
    trained_at = json.loads(training.read_text()).get("trained_at") if training.exists() else None
    return {"folder": str(folder.relative_to(REPO)), "unet_sha256_16": digest, "trained_at": trained_at}


def _interval(iv: dict) -> dict:
    return {k: None if iv[k] is None else round(iv[k], 4) for k in ("value", "low", "high")}


def example_part(workdir: Path, guidance: list[str]) -> dict:
    """`make demo-utility`'s sweep: the example job at each guidance scale, each point's qc/utility.json and
    distribution metrics; the best point by the synthetic/real ratio named."""
    from diffgen.jobs.api import sweep

    _fresh_ray()
    t0 = time.perf_counter()
    report = sweep(JOB, [f"sampler.guidance_scale={','.join(guidance)}"], output=str(workdir / "example"))
    wall = time.perf_counter() - t0
    _fresh_ray()
    points = [_example_point(Path(p.output), p.settings, p.status, p.metrics) for p in report.points]
    best = max(points, key=lambda p: p["ratio"]["value"] or 0.0)
    return {"wall_s": round(wall, 1), "grid": report.grid,
            "best_by_ratio": best["settings"], "points": points}  # fmt: skip


def _example_point(output: Path, settings: dict, status: str, metrics: dict) -> dict:
    report = json.loads((output / "qc" / "utility.json").read_text())
    counts = json.loads((output / "run.json").read_text())["counts"]
    probes = {p["name"]: {"accuracy": _interval(p["accuracy"]), "macro_f1": _interval(p["macro_f1"]),
                          "train_images": p["train_images"]} for p in report["probes"]}  # fmt: skip
    return {
        "settings": settings, "status": status, "images_written": counts["images_written"],
        "attempts": counts.get("attempts"), "backbone": report["backbone"], "classes": report["classes"],
        "real_images": report["real_images"], "test_images": report["test_images"],
        "synthetic_images": report["synthetic_images"], "probes": probes, "ratio": _interval(report["ratio"]),
        "few_shot": report["few_shot"], "augmentation_gain": _interval(report["augmentation_gain"]),
        "class_ratio": {c: _interval(v) for c, v in report["class_ratio"].items()},
        "resamples": report["resamples"], "level": report["level"], "warnings": report["warnings"],
        "metrics": {k: None if v is None else round(v, 4) for k, v in metrics.items()},
    }  # fmt: skip


def cost_manifest(images: int, path: Path) -> Path:
    """The example's rows, 4 images each, the shapes in turn, repeated with distinct ids (so distinct seeds)
    to `images` images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_label: dict[str, list[dict]] = {}
    for row in pq.read_table(JOB.parent / "manifest.parquet").to_pylist():
        by_label.setdefault(row["label"], []).append(row)
    base = [row for group in zip(*by_label.values()) for row in group]  # shapes in turn: any prefix has all
    rows = []
    for i in range(-(-images // 4)):
        row = dict(base[i % len(base)])
        row.update(id=f"{row['id']}-r{i // len(base)}", num_images=min(4, images - 4 * i))
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@contextmanager
def _timed(module, name: str, seconds: list[float]):
    """Adds the time of every call of `module.name` to `seconds` while inside."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


class _TreeCpu(ProcessCpu):
    """CPU seconds of this process and its descendants only (the run's Ray: raylet, GCS, workers), so that
    other work on a shared machine, which stretches wall time, does not count."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        super().__init__()

    def _sample(self, first: bool = False) -> None:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                self.parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        super()._sample(first)

    def tree_cpu_s(self) -> float:
        self.stop()
        tree, grew = {self.driver}, True
        while grew:
            more = {pid for pid, ppid in self.parent.items() if ppid in tree} - tree
            tree |= more
            grew = bool(more)
        return round(sum(s - self.first.get(pid, 0.0) for pid, (_, s) in self.last.items() if pid in tree), 2)


def _fresh_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _one_run(variant: str, manifest: Path, output: Path, steps: int | None) -> dict:
    import diffgen.pipelines.generate as generate_module
    import diffgen.reporting.report as report_module
    from diffgen.jobs.api import run

    overrides = [*VARIANTS[variant], f"run_id=bench-{variant.replace('+', '-')}"]
    if steps is not None:
        overrides.append(f"sampler.steps={steps}")
    utility_s: list[float] = []
    distribution_s: list[float] = []
    _fresh_ray()
    with _timed(generate_module, "score_utility", utility_s), \
         _timed(report_module, "distribution_report", distribution_s):  # fmt: skip
        cpu = _TreeCpu()
        t0 = time.perf_counter()
        summary = run(JOB, manifest=str(manifest), output=str(output), overrides=overrides).summary
        _fresh_ray()  # Ray's processes end inside the sample
        wall = time.perf_counter() - t0
        cpu_s = cpu.tree_cpu_s()
    return {
        "variant": variant, "wall_s": round(wall, 2), "cpu_s": cpu_s, "images_written": summary.counts.images_written,
        "attempts": summary.counts.attempts,
        "utility_step_s": round(sum(utility_s), 2), "distribution_step_s": round(sum(distribution_s), 2),
    }  # fmt: skip


def cost_part(workdir: Path, images: int, repeats: int, steps: int | None) -> dict:
    manifest = cost_manifest(images, workdir / "cost-manifest.parquet")
    # Warm-up: the reference sample is embedded once and cached beside the reference, like its statistics.
    warm = cost_manifest(16, workdir / "warm-manifest.parquet")
    _one_run("qc+utility", warm, workdir / "warm", steps)
    runs = []
    for r in range(repeats):
        for variant in VARIANTS:
            runs.append({**_one_run(variant, manifest, workdir / f"cost-{variant}-{r}", steps), "repeat": r})
    median = {v: _median([x["wall_s"] for x in runs if x["variant"] == v]) for v in VARIANTS}
    cpu = {v: _median([x["cpu_s"] for x in runs if x["variant"] == v]) for v in VARIANTS}
    added = [x["utility_step_s"] + x["distribution_step_s"] for x in runs if x["variant"] == "qc+utility"]
    return {
        "images": images, "steps": steps, "repeats": repeats, "runs": runs, "median_wall_s": median,
        "median_cpu_s": cpu, "cpu_added_fraction": round(cpu["qc+utility"] / cpu["qc"] - 1, 4),
        "whole_run_added_fraction": round(median["qc+utility"] / median["qc"] - 1, 4),
        "timed_steps_s": _median(added),
        "timed_steps_fraction": round(_median(added) / median["qc+utility"], 4),
        "target_fraction": 0.05,
    }  # fmt: skip


def stage_part(images: int, batch_size: int = 8) -> dict:
    """The QC stage's own added work, without Ray or generation: `QcStage` with and without the samples and
    the label column, called in turn on the same batches (the example's real renders as pixels, distinct
    record ids), CPU seconds of each call (`time.process_time`), so drift in the machine's load cancels."""
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    from diffgen.schemas.job import load_job_spec
    from diffgen.stages.qc import QcStage

    qc = load_job_spec(JOB).qc
    stages = {"qc": QcStage(qc.model_copy(update={"sample_size": 0, "utility": None})), "qc+utility": QcStage(qc)}
    for stage in stages.values():
        stage.setup()
    files = sorted((JOB.parent / "real").rglob("*.png"))
    spent = dict.fromkeys(stages, 0.0)
    for start in range(0, images, batch_size):
        rows = []
        for k in range(start, min(start + batch_size, images)):
            path = files[k % len(files)]
            pixels = np.asarray(Image.open(path).convert("RGB"))
            rows.append({"record_id": f"{k:024d}", "prompt": f"a {path.parent.name}", "pixels": pixels.tobytes(),
                         "status": None, "error": None, "width": pixels.shape[1], "height": pixels.shape[0],
                         "label": path.parent.name})  # fmt: skip
        batch = pa.Table.from_pylist(rows)
        for name in (stages if start // batch_size % 2 else reversed(list(stages))):
            t0 = time.process_time()
            stages[name](batch)
            spent[name] += time.process_time() - t0
    return {"images": images, "batch_size": batch_size, "cpu_s": {k: round(v, 2) for k, v in spent.items()},
            "added_cpu_s": round(spent["qc+utility"] - spent["qc"], 2)}  # fmt: skip


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return round(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.utility", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=tuple(QUESTIONS), default=list(QUESTIONS))
    parser.add_argument("--guidance", help="the example's guidance scales (default make demo-utility's 1.5,3,5,7.5; "
                        "--quick 7.5)")
    parser.add_argument("--images", type=int, help="images per cost run (default 1000, --quick 16)")
    parser.add_argument("--steps", type=int, help="sampler steps for the cost runs (default: the job's)")
    parser.add_argument("--repeats", type=int, default=1, help="cost runs per variant, interleaved; medians")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few images, results under out/")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results, --quick out/benchmarks)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.images is not None and args.images < 8):
        parser.error("--repeats must be >= 1 and --images >= 8")
    prepare_environment()
    info = machine()
    folder = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks.utility", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="diffgen-bench-utility-") as tmp:
        for part in QUESTIONS:  # one results file each: a part re-runs alone
            if part not in args.parts:
                continue
            started, t0 = datetime.now(UTC), time.perf_counter()
            if part == "example":
                guidance = args.guidance or ("7.5" if args.quick else "1.5,3,5,7.5")
                result = example_part(Path(tmp), guidance.split(","))
            elif part == "cost":
                result = cost_part(Path(tmp), args.images or (16 if args.quick else 1000), args.repeats, args.steps)
            else:
                result = stage_part(args.images or (16 if args.quick else 1000))
            document = {"benchmark": f"utility (issue #20): {QUESTIONS[part]}", "command": command,
                        "started": started.isoformat(timespec="seconds"), "wall_s": round(time.perf_counter() - t0, 1),
                        "machine": info, "versions": versions(), "model": model_identity(),
                        "job": str(JOB.relative_to(REPO)), "quick": args.quick, part: result}  # fmt: skip
            out = folder / f"utility-{part}-cpu-{machine_slug(info, gpu=False)}.json"
            out.write_text(json.dumps(document, indent=2) + "\n")
            print(json.dumps(result, indent=2), f"\nresults: {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
