"""How close the full pipeline runs to a bare diffusers loop, and what each stage costs.

    .venv/bin/python -m benchmarks.pipeline [--images N] [--repeats R] [--quick]
    .venv/bin/python -m benchmarks.pipeline --gpu [--gpu-models sd15 sdxl] [--compile] [--dtype bf16]

CPU mode runs, in one process session, on the model and settings of a job file (default: the
example job, examples/default/job.yaml, on the embedded default model models/micro-sd), over the same
N prompts (the example manifest's rows, repeated with distinct ids and seeds):

  bare          a plain diffusers loop: the pipeline class named by the folder's model_index.json via
                `from_pretrained`, the job's scheduler, size, steps, guidance and negative prompt, batches
                of `compute.batch_size`, one CPU torch.Generator per image; torch on 2 threads
  bare-1t       the same on 1 thread
  bare-2x1      two bare loops at once, in two processes on 1 thread each, half the images each: what
                the two cores give two generators with nothing else running (the actors' yardstick)
  pipeline      `diffgen.jobs.api.run`: Ray Data, 1 generation actor x diffgen's default torch threads (the
                cores less one for the other stages: 1 on 2 cores), QC on, watermark + provenance
                on, PNG encode, local folder
  pipeline-s3   the same, written to moto's S3 server on 127.0.0.1 (as the tests use)
  no-qc         pipeline with `qc.enabled=false`
  no-watermark  pipeline with `provenance.watermark=false`: no embedding and no read-back check. The
                provenance record (PNG iTXt + XMP) has no switch and is still written; C2PA is off in
                every variant (the job's default)
  actors-1x2    pipeline, 1 actor x 2 threads (both cores: OpenMP threads that share their cores with
                the QC, write and Ray processes)
  actors-1x1    pipeline, 1 actor x 1 thread
  actors-2x1    pipeline, 2 actors x 1 thread (the two cores split between two actors)
  actors-2x1-ray-niceness
                actors-2x1 with `compute.helper_niceness=null`: QC and writers at Ray's worker niceness
                (15, the generators') instead of 19

Every pipeline variant starts its own Ray (stopped after the run), so its end-to-end time includes
Ray's start, the actors' start and model load, compaction, the QC report and run.json.

Two rates per variant:
  e2e_images_per_s     images / wall time of the whole call (bare: `from_pretrained` + loop;
                       pipeline: `diffgen.jobs.api.run`, Ray start included)
  steady_images_per_s  least-squares slope of the cumulative number of images against the time each
                       batch was done, over the second half of the images: for the pipeline the
                       index's `created_at` (stamped once per write call, when the write stage
                       receives a batch, i.e. after generation and QC); for the bare loop the time each
                       batch's uint8 images are ready. The first half absorbs every fixed cost and the
                       backlog that piles up while the write workers start (each imports the whole
                       stack); a slope over many stamps is not biased by Ray Data handing batches on
                       in bursts (one per input block). `steady_first_half_images_per_s` well above the
                       steady rate says the run was too short for the backlog to drain.
Ratios and targets (issue #8) use the steady rates; the script reports pass/fail and asserts nothing.
With --repeats R every variant runs R times, interleaved, and the median is reported. Before the
variants, `stage_profile` times diffgen's GenerateStage, QcStage and WriteStage (watermark on and
off) in this process on 1 thread without Ray: what each CPU stage costs per image next to generation.

GPU mode (--gpu; refuses to run without CUDA) builds real-size SD 1.5 and SDXL folders with random
weights (`lab.builders.real_size`, once, under --models-dir), then for SD 1.5 at 512x512, 25 steps and
SDXL at 1024x1024, 20 steps, both with classifier-free guidance, runs `bare` and `pipeline` (QC,
watermark, provenance, local writes) in --dtype (bf16 default) with channels-last, SDPA attention
(diffusers' default on torch 2) and, with --compile, the UNet compiled in place as diffgen does. It
reports images/s per GPU and the generation GPU's busy fraction: for the bare loop from CUDA events
around every UNet call; for the pipeline from NVML sampling when pynvml is installed, and always the
estimate `pipeline images/s x UNet GPU seconds per image (bare)`.

Results: benchmarks/results/pipeline-{cpu,gpu}-<machine>.json (with --quick: out/benchmarks/),
and a table on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Before Ray or the libraries start: no hub access, no token file, Ray workers inherit all of it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from diffgen.schemas.job import JobSpec, load_job_spec  # noqa: E402
from diffgen.stages.generate import default_cpu_threads  # noqa: E402

DEFAULT_JOB = ROOT / "examples" / "default" / "job.yaml"
RESULTS = ROOT / "benchmarks" / "results"
QUICK_RESULTS = ROOT / "out" / "benchmarks"

TARGETS = {
    "pipeline_over_bare": 0.90,
    "qc_on_over_off": 0.95,
    "watermark_on_over_off": 0.95,
    "actors_2_over_1": 1.7,
}
# (numerator variant, denominator variant, what the ratio says)
RATIOS = {
    "pipeline_over_bare": ("pipeline", "bare", "everything on, 1 actor, default threads, over the bare loop"),
    "qc_on_over_off": ("pipeline", "no-qc", "QC on over off"),
    "watermark_on_over_off": ("pipeline", "no-watermark", "watermark on over off (provenance text stays on)"),
    "actors_2_over_1": ("actors-2x1", "actors-1x1", "2 actors x 1 thread over 1 actor x 1 thread"),
    "actors_2x1_over_1x2": ("actors-2x1", "actors-1x2", "2 actors x 1 thread over 1 actor x 2 threads (same cores)"),
    "default_threads_over_2": ("pipeline", "actors-1x2", "1 actor: diffgen's default threads over 2 threads"),
    "s3_over_local": ("pipeline-s3", "pipeline", "writing to loopback S3 over a local folder"),
    "bare_2_threads_over_1": ("bare", "bare-1t", "bare loop, 2 threads over 1"),
    "best_pipeline_over_bare": ("actors-2x1", "bare", "2 actors x 1 thread, everything on, over the bare loop"),
    "bare_2_processes_over_1": ("bare-2x1", "bare-1t", "2 bare loops side by side over 1 (what the cores allow)"),
    "actors_2x1_over_bare_2x1": ("actors-2x1", "bare-2x1", "2 actors over 2 bare loops side by side"),
    "helper_niceness_2x1": ("actors-2x1", "actors-2x1-ray-niceness",
                            "2 actors: QC and writers at niceness 19 over Ray's 15 (the generators')"),
}


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # bare | pipeline
    description: str
    actors: int = 1
    threads: int | None = None  # None: diffgen's default (diffgen.stages.generate.default_cpu_threads)
    qc: bool = True
    watermark: bool = True
    output: str = "local"  # local | s3
    helper_niceness: bool = True  # False: compute.helper_niceness=null, QC and writers at Ray's worker niceness


CPU_VARIANTS = [
    Variant("bare", "bare", "plain diffusers loop, 2 threads", threads=2),
    Variant("bare-1t", "bare", "plain diffusers loop, 1 thread", threads=1),
    Variant("bare-2x1", "bare", "2 plain diffusers loops side by side (2 processes x 1 thread), half the images each",
            actors=2, threads=1),
    Variant("pipeline", "pipeline", "diffgen.jobs.api.run, 1 actor x diffgen's default threads, QC + watermark + provenance, "
            "local folder"),
    Variant("pipeline-s3", "pipeline", "as pipeline, written to loopback S3 (moto)", output="s3"),
    Variant("no-qc", "pipeline", "as pipeline, qc.enabled=false", qc=False),
    Variant("no-watermark", "pipeline", "as pipeline, provenance.watermark=false", watermark=False),
    Variant("actors-1x2", "pipeline", "as pipeline, 1 actor x 2 threads", threads=2),
    Variant("actors-1x1", "pipeline", "as pipeline, 1 actor x 1 thread", threads=1),
    Variant("actors-2x1", "pipeline", "as pipeline, 2 actors x 1 thread", actors=2, threads=1),
    Variant("actors-2x1-ray-niceness", "pipeline", "as actors-2x1, QC and writers at Ray's worker niceness "
            "(compute.helper_niceness=null)", actors=2, threads=1, helper_niceness=False),
]  # fmt: skip
GPU_VARIANTS = [
    Variant("bare", "bare", "plain diffusers loop on the GPU", threads=None),
    Variant("pipeline", "pipeline", "diffgen.jobs.api.run, 1 generation actor, QC + watermark + provenance, local folder",
            threads=None),
]  # fmt: skip


@dataclass(frozen=True)
class GpuModel:
    architecture: str  # a key of lab.builders.real_size.ARCHITECTURES
    width: int
    steps: int
    guidance_scale: float
    batch_size: int
    images: int
    target_images_per_s: float  # issue #8, per H100, bf16 and compiled


GPU_MODELS = {
    "sd15": GpuModel("sd15", 512, 25, 7.5, batch_size=8, images=128, target_images_per_s=6.8),
    "sdxl": GpuModel("sdxl", 1024, 20, 5.0, batch_size=4, images=48, target_images_per_s=1.1),
}


@dataclass
class Measurement:
    variant: str
    images: int
    e2e_wall_s: float
    e2e_images_per_s: float
    steady_images_per_s: float | None
    steady_window_s: float
    stamps: int
    extra: dict = field(default_factory=dict)


def steady_rate(stamps: list[tuple[float, int]]) -> tuple[float | None, float, float | None]:
    """Images/s over the second half of a run: the least-squares slope of cumulative images against time,
    over the stamps from the one that completes half the images to the last; its window in seconds; and
    the same slope over the first half, which comes out higher when a late-starting stage (a write worker
    importing the stack) first drains a backlog, a sign that the run was too short."""
    stamps = sorted(stamps)
    t = np.array([s for s, _ in stamps], dtype=np.float64)
    counts = np.cumsum([n for _, n in stamps]).astype(np.float64)
    if len(t) < 3:
        return None, 0.0, None
    half = int(np.searchsorted(counts, counts[-1] / 2))

    def slope(a: int, b: int) -> float | None:
        if b - a < 2 or t[b - 1] <= t[a]:
            return None
        return float(np.polyfit(t[a:b] - t[a], counts[a:b], 1)[0])

    return slope(half, len(t)), float(t[-1] - t[half]), slope(0, half + 1)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


# ---------------------------------------------------------------------------------------------- inputs


def ensure_default_model(spec: JobSpec) -> None:
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


# ---------------------------------------------------------------------------------------------- bare


class UnetTimer:
    """CUDA events around every UNet call: the span each call occupies on the GPU's stream."""

    def __init__(self, unet: torch.nn.Module):
        self.pending: list[list] = []

        # Eager even when the UNet is compiled: the hooks become graph breaks at its edges.
        @torch.compiler.disable
        def before(module, args):
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self.pending.append([start, None])

        @torch.compiler.disable
        def after(module, args, output):
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.pending[-1][1] = end

        unet.register_forward_pre_hook(before)
        unet.register_forward_hook(after)

    def collect(self) -> float:
        """UNet GPU seconds since the last call (synchronises)."""
        torch.cuda.synchronize()
        spent = sum(s.elapsed_time(e) for s, e in self.pending if e is not None) / 1000.0
        self.pending.clear()
        return spent


def run_bare(spec: JobSpec, rows: list[dict], variant: Variant, gpu: bool) -> Measurement:
    import diffusers

    from diffgen.generation.loading import DTYPES
    from diffgen.generation.schedulers import SCHEDULERS

    if variant.threads is not None:
        torch.set_num_threads(variant.threads)
    sampler, compute = spec.sampler, spec.compute
    device = torch.device("cuda" if gpu else "cpu")
    dtype = DTYPES[compute.dtype] if gpu else torch.float32
    t0 = time.perf_counter()
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
    timer = UnetTimer(pipe.unet) if gpu else None
    if gpu and compute.torch_compile:
        pipe.unet.compile(fullgraph=False, dynamic=False)
    loaded = time.perf_counter()
    cfg = sampler.guidance_scale > 1
    stamps: list[tuple[float, int]] = []
    unet_seconds: list[float] = []
    first_images: dict[str, np.ndarray] = {}
    for start in range(0, len(rows), compute.batch_size):
        chunk = rows[start : start + compute.batch_size]
        call = {
            "prompt": [r["prompt"] for r in chunk],
            "num_inference_steps": sampler.steps,
            "guidance_scale": sampler.guidance_scale,
            "width": sampler.width,
            "height": sampler.height,
            "generator": [torch.Generator("cpu").manual_seed(r["seed"]) for r in chunk],
            "output_type": "np",
        }
        if cfg:
            call["negative_prompt"] = [sampler.negative_prompt] * len(chunk)
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
        "steady_first_half_images_per_s": _round(first_half),
        "parameters": {
            name: sum(p.numel() for p in module.parameters())
            for name, module in pipe.components.items()
            if isinstance(module, torch.nn.Module)
        },
        "attention_processors": sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()}),
    }
    if timer is not None and len(unet_seconds) > 1:
        # After the first batch, which pays for compilation and autotuning.
        images_after_first = sum(n for _, n in stamps[1:])
        extra["unet_gpu_s_per_image"] = round(sum(unet_seconds[1:]) / images_after_first, 5)
        extra["gpu_busy_fraction_unet"] = round(sum(unet_seconds[1:]) / (stamps[-1][0] - stamps[0][0]), 4)
    extra["_first_images"] = first_images
    del pipe
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    n = len(rows)
    return Measurement(variant.name, n, round(end - t0, 3), round(n / (end - t0), 4), _round(rate), round(window, 3),
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


def profile_stages(job: Path, manifest: Path, work: Path, images: int) -> dict:
    """diffgen's own stages called in this process on 1 thread, no Ray: seconds per image for each.

    Shows what the pipeline's CPU stages cost next to generation on the same cores.
    """
    from diffgen.pipelines.generate import score_and_write_rows
    from diffgen.pipelines.plan import plan
    from diffgen.stages.generate import GenerateStage
    from diffgen.stages.qc import QcStage
    from diffgen.stages.write import WriteStage

    torch.set_num_threads(1)
    out: dict = {"images": images, "threads": 1}
    for watermark in (True, False):
        spec = load_job_spec(
            job,
            manifest=str(manifest),
            output=str(work / f"profile-{watermark}"),
            overrides=["compute.threads_per_actor=1", f"provenance.watermark={str(watermark).lower()}"],
        )
        p = plan(spec)
        todo = p.todo.slice(0, images)
        stages = {"generate": GenerateStage(spec), "qc": QcStage(spec.qc), "write": WriteStage(spec, p.output,
                  p.run_id, p.credentials)}  # fmt: skip
        for stage in stages.values():
            stage.setup()
        seconds = dict.fromkeys(stages, 0.0)
        generated = []
        for start in range(0, todo.num_rows, spec.compute.batch_size):
            t = time.perf_counter()
            generated.append(stages["generate"](todo.slice(start, spec.compute.batch_size)))
            seconds["generate"] += time.perf_counter() - t
        # QC and writes take the pipeline's batches, larger than generation's.
        generated = pa.concat_tables(generated)
        rows = score_and_write_rows(spec.compute)
        for start in range(0, generated.num_rows, rows):
            batch = generated.slice(start, rows)
            for name in ("qc", "write"):
                t = time.perf_counter()
                batch = stages[name](batch)
                seconds[name] += time.perf_counter() - t
        key = "watermark_on" if watermark else "watermark_off"
        out[key] = {f"{name}_s_per_image": round(s / todo.num_rows, 5) for name, s in seconds.items()}
    on, off = out["watermark_on"], out["watermark_off"]
    out["watermark_embed_and_check_s_per_image"] = round(on["write_s_per_image"] - off["write_s_per_image"], 5)
    out["cpu_stages_over_generate"] = round(
        (on["qc_s_per_image"] + on["write_s_per_image"]) / on["generate_s_per_image"], 4
    )
    return out


# ---------------------------------------------------------------------------------------------- pipeline


class ProcessCpu:
    """CPU seconds per process role on this machine while a pipeline variant runs: utime + stime from
    /proc/<pid>/stat, sampled every second so that processes which exit before the end still count. A
    process's role is read from its title (Ray names its workers after the actor or task they run); a
    worker that ran tasks of several kinds counts under the last one."""

    ROLES = (
        ("_GenerateActor", "generate actors"),
        ("QcActor", "qc actor"),
        ("WriteActor", "write actors"),
        ("StatsSink", "qc stats sink"),
        # Ray Data's own helper actors, the largest of the overhead outside the stages on 2 cores.
        ("_StatsActor", "ray data stats actor"),
        ("_AutoscalingCoordinatorActor", "ray data autoscaling coordinator"),
        ("ActorLocationTracker", "ray data actor location tracker"),
        ("dashboard/agent.py", "dashboard agent"),
        ("log_monitor.py", "log monitor"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs server"),
        ("ray::IDLE", "idle ray workers"),
    )

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.driver = os.getpid()
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.started = time.perf_counter()
        self._sample(first=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
            if first:
                self.first[pid] = seconds
            # An exiting process reads an empty title, an idle Ray worker "ray::IDLE" between tasks:
            # keep the last title that named what the process did.
            known = self.last.get(pid, ("", 0.0))[0]
            if not title.strip() or ("ray::IDLE" in title and known):
                title = known
            self.last[pid] = (title, seconds)

    def _run(self) -> None:
        # Every second: the sampler runs in the driver, and reading ~90 processes twice a second took
        # a quarter of the driver's CPU (py-spy) on 2 cores.
        while not self._stop.wait(1.0):
            self._sample()

    def _role(self, pid: int, title: str) -> str:
        if pid == self.driver:
            return "driver (Ray Data executor)"
        for key, role in self.ROLES:
            if key in title:
                return role
        return "other ray processes" if "ray" in title else "other processes"

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.perf_counter() - self.started
        by_role: Counter = Counter()
        for pid, (title, seconds) in self.last.items():
            by_role[self._role(pid, title)] += seconds - self.first.get(pid, 0.0)
        total = sum(by_role.values())
        return {
            "wall_s": round(wall, 2),
            "cpu_s": round(total, 2),
            "cores_busy": round(total / wall, 3) if wall else None,
            "cpu_s_by_role": {k: round(v, 2) for k, v in by_role.most_common() if v >= 0.05},
        }


class NvmlSampler:
    """GPU utilisation (NVML: share of time a kernel ran) sampled every 50 ms, when pynvml is installed."""

    def __init__(self, index: int = 0):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((time.time(), self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def mean_between(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return round(statistics.fmean(inside) / 100.0, 4) if inside else None


def pipeline_overrides(variant: Variant) -> list[str]:
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


def run_pipeline(
    job: Path, base_overrides: list[str], manifest: Path, output: str, variant: Variant, gpu: bool
) -> Measurement:
    import ray

    from diffgen.dataset.index import read_index
    from diffgen.jobs.api import RunError, run

    if ray.is_initialized():
        ray.shutdown()
    sampler = None
    if gpu:
        try:
            sampler = NvmlSampler()
        except Exception as e:  # noqa: BLE001 - pynvml missing or NVML unusable: the estimate stands alone
            print(f"    (no NVML sampling: {type(e).__name__}: {e})", flush=True)
    overrides = [*base_overrides, *pipeline_overrides(variant)]
    cpu = None if gpu else ProcessCpu()
    t0 = time.perf_counter()
    try:
        summary = run(job, manifest=str(manifest), output=output, overrides=overrides).summary
    except RunError as e:
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
        "steady_first_half_images_per_s": _round(first_half),
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
    return Measurement(variant.name, n, round(wall, 3), round(n / wall, 4), _round(rate), round(window, 3),
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


# ---------------------------------------------------------------------------------------------- the session


def start_s3() -> object:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="benchmark",
        AWS_SECRET_ACCESS_KEY="benchmark",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return server


def s3_output() -> str:
    import fsspec

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/out"


@dataclass
class Session:
    spec: JobSpec
    runs: dict[str, list[Measurement]]
    same_images: dict
    profile: dict | None


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
    """Every variant `repeats` times, interleaved, in this process; each round in the listed order."""
    import ray

    spec = load_job_spec(job, overrides=base_overrides)
    ensure_default_model(spec)
    manifest, rows = benchmark_manifest(spec, images, work)
    profile = None
    if profile_images:
        print(f"profile: diffgen's stages in this process, 1 thread, {profile_images} images", flush=True)
        profile = profile_stages(job, manifest, work, profile_images)
    ray.data.DataContext.get_current().enable_progress_bars = False
    server = start_s3() if any(v.output == "s3" for v in variants) else None
    runs: dict[str, list[Measurement]] = {v.name: [] for v in variants}
    checks: dict = {}
    try:
        for r in range(repeats):
            for v in variants:
                print(f"[{r + 1}/{repeats}] {v.name}: {v.description}", flush=True)
                if v.kind == "bare" and v.actors > 1:
                    m = run_bare_processes(spec, rows, v)
                elif v.kind == "bare":
                    m = run_bare(spec, rows, v, gpu)
                else:
                    output = s3_output() if v.output == "s3" else str(work / f"out-{v.name}-{r}")
                    m = run_pipeline(job, base_overrides, manifest, output, v, gpu)
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


def summarise(runs: dict[str, list[Measurement]], variants: list[Variant]) -> dict[str, dict]:
    out = {}
    by_name = {v.name: v for v in variants}
    for name, ms in runs.items():
        if not ms:
            continue
        steady = [m.steady_images_per_s for m in ms if m.steady_images_per_s is not None]
        out[name] = {
            **{k: val for k, val in asdict(by_name[name]).items() if k != "name"},
            **({"default_threads": default_cpu_threads(by_name[name].actors)} if by_name[name].kind == "pipeline"
               and by_name[name].threads is None else {}),
            "images": ms[0].images,
            "e2e_wall_s": round(statistics.median(m.e2e_wall_s for m in ms), 3),
            "e2e_images_per_s": round(statistics.median(m.e2e_images_per_s for m in ms), 4),
            "steady_images_per_s": round(statistics.median(steady), 4) if steady else None,
            "runs": [
                {
                    "e2e_wall_s": m.e2e_wall_s,
                    "e2e_images_per_s": m.e2e_images_per_s,
                    "steady_images_per_s": m.steady_images_per_s,
                    "steady_window_s": m.steady_window_s,
                    "stamps": m.stamps,
                    **{k: val for k, val in m.extra.items() if not k.startswith("_")},
                }
                for m in ms
            ],
        }
    return out


def ratios(variants: dict[str, dict], specs: dict = RATIOS) -> dict[str, dict]:
    out = {}
    for name, (num, den, says) in specs.items():
        if num not in variants or den not in variants:
            continue
        a, b = variants[num], variants[den]
        both = a["steady_images_per_s"] and b["steady_images_per_s"]
        steady = a["steady_images_per_s"] / b["steady_images_per_s"] if both else None
        entry = {
            "of": f"{num} / {den}",
            "says": says,
            "steady": _round(steady, 3),
            "e2e": round(a["e2e_images_per_s"] / b["e2e_images_per_s"], 3),
        }
        if name in TARGETS:
            entry.update(target=TARGETS[name], passed=None if steady is None else steady >= TARGETS[name])
        out[name] = entry
    return out


# ---------------------------------------------------------------------------------------------- machine


def machine() -> dict:
    import psutil

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "load_average_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return info


def machine_slug(info: dict, gpu: bool) -> str:
    name = info["gpu"]["name"] if gpu else f"{info['cpu_model']}-{info['logical_cores']}c"
    name = re.sub(r"\((r|tm)\)|processor|cpu @.*", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from diffgen.reporting.versions import package_versions

    found = package_versions()
    for name in ("numpy", "invisible-watermark", "moto", "accelerate", "pynvml", "nvidia-ml-py"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


# ---------------------------------------------------------------------------------------------- report


def table(result: dict) -> str:
    lines = []
    for title, block in result["models"].items():
        lines += [
            f"\n## {title}: {block['settings_line']}\n",
            "| variant | actors x threads | QC | watermark | output | images | e2e s | e2e img/s | steady img/s "
            "| 1st half img/s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, v in block["variants"].items():
            threads = v["threads"] or f"{v.get('default_threads', '?')} (default)"
            bare = f"bare x {threads}" if v["actors"] == 1 else f"{v['actors']} bare x {threads}"
            shape = bare if v["kind"] == "bare" else f"{v['actors']} x {threads}"
            qc, mark = (
                ("-", "-") if v["kind"] == "bare" else ("on" if v["qc"] else "off", "on" if v["watermark"] else "off")
            )
            output = "-" if v["kind"] == "bare" else v["output"]
            steady = "-" if v["steady_images_per_s"] is None else f"{v['steady_images_per_s']:.3f}"
            halves = [r.get("steady_first_half_images_per_s") for r in v["runs"]]
            first = statistics.median(h for h in halves if h) if any(halves) else None
            # A first half much faster than the second: a backlog drained there, the run was short.
            drained = first is not None and v["steady_images_per_s"] and first > 1.3 * v["steady_images_per_s"]
            first_text = "-" if first is None else f"{first:.3f}{' (drain: run longer)' if drained else ''}"
            lines.append(
                f"| {name} | {shape} | {qc} | {mark} | {output} | {v['images']} | {v['e2e_wall_s']:.1f} | "
                f"{v['e2e_images_per_s']:.3f} | {steady} | {first_text} |"
            )
        lines += ["", "| ratio | steady | e2e | target | |", "|---|---|---|---|---|"]
        for name, r in block["ratios"].items():
            verdict = {True: "PASS", False: "FAIL", None: "?"}[r["passed"]] if "target" in r else ""
            target = f">= {r['target']}" if "target" in r else ""
            lines.append(f"| {name} ({r['of']}) | {r['steady']} | {r['e2e']} | {target} | {verdict} |")
        profiles = [(name, v["runs"][0]["cpu_profile"]) for name, v in block["variants"].items()
                    if v["runs"] and v["runs"][0].get("cpu_profile")]  # fmt: skip
        if profiles:
            lines += ["", "CPU per image by process, first run of each variant (cores busy: CPU s / wall s):", ""]
            for name, prof in profiles:
                n = block["variants"][name]["images"]
                roles = ", ".join(f"{role} {sec / n * 1000:.0f} ms" for role, sec in prof["cpu_s_by_role"].items())
                lines.append(f"- {name}: {prof['cores_busy']} cores busy; {roles}")
        for key in ("gpu", "same_images", "stage_profile"):
            if block.get(key):
                lines.append(f"\n{key}: {json.dumps(block[key])}")
    return "\n".join(lines)


def settings_of(spec: JobSpec, images: int, repeats: int) -> dict:
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


def run_cpu(args: argparse.Namespace) -> dict:
    images = args.images or (16 if args.quick else 480)
    variants = [v for v in CPU_VARIANTS if not args.variants or v.name in args.variants]
    with tempfile.TemporaryDirectory(prefix="diffgen-bench-") as tmp:
        s = session(variants, args.job, [], images, args.repeats, Path(tmp), gpu=False,
                    profile_images=min(images, 8 if args.quick else 40))  # fmt: skip
    summary = summarise(s.runs, variants)
    spec = s.spec
    return {
        "cpu": {
            "settings_line": f"{spec.model.id}, {spec.sampler.width}x{spec.sampler.height}, {spec.sampler.steps} "
            f"steps, guidance {spec.sampler.guidance_scale}, batch {spec.compute.batch_size}, "
            f"{images} images x {args.repeats}",
            "settings": settings_of(spec, images, args.repeats),
            "variants": summary,
            "ratios": ratios(summary),
            "same_images": s.same_images,
            "stage_profile": s.profile,
        }
    }


def run_gpu(args: argparse.Namespace) -> dict:
    from lab.builders.real_size import build_real_size

    blocks = {}
    for name in args.gpu_models:
        m = GPU_MODELS[name]
        if args.quick:
            m = replace(m, images=2 * m.batch_size)
        images = args.images or m.images
        images = -(-images // m.batch_size) * m.batch_size  # whole batches: a compiled UNet keeps one shape
        folder = args.models_dir / f"{name}-real-size"
        if not (folder / "model_index.json").is_file():
            print(f"building {name} with random weights in {folder}", flush=True)
            build_real_size(name, folder, device="cuda", bpe=args.clip_bpe)
        overrides = [
            f"model.id={folder.resolve()}",
            f"sampler.width={m.width}",
            f"sampler.height={m.width}",
            f"sampler.steps={m.steps}",
            f"sampler.guidance_scale={m.guidance_scale}",
            f"compute.batch_size={m.batch_size}",
            "compute.device=cuda",
            # The QC actor reserves a quarter GPU next to the generator (diffgen.pipelines.qc.qc_map).
            "compute.gpus_per_actor=0.75",
            f"compute.dtype={args.dtype}",
            "compute.channels_last=true",
            f"compute.torch_compile={str(args.compile).lower()}",
        ]
        with tempfile.TemporaryDirectory(prefix="diffgen-bench-", dir=args.models_dir) as tmp:
            s = session(GPU_VARIANTS, args.job, overrides, images, args.repeats, Path(tmp), gpu=True)
        summary = summarise(s.runs, GPU_VARIANTS)
        bare, pipe = summary["bare"], summary["pipeline"]
        per_image = [r["unet_gpu_s_per_image"] for r in bare["runs"] if r.get("unet_gpu_s_per_image")]
        busy_bare = [r["gpu_busy_fraction_unet"] for r in bare["runs"] if r.get("gpu_busy_fraction_unet")]
        rate = pipe["steady_images_per_s"]
        blocks[name] = {
            "settings_line": f"{name} real-size (random weights), {m.width}x{m.width}, {m.steps} steps, CFG "
            f"{m.guidance_scale}, batch {m.batch_size}, {args.dtype}, channels-last, "
            f"{'compiled' if args.compile else 'eager'}, {images} images x {args.repeats}",
            "settings": settings_of(s.spec, images, args.repeats),
            "variants": summary,
            "ratios": ratios(summary, {"pipeline_over_bare": RATIOS["pipeline_over_bare"]}),
            "gpu": {
                "images_per_s_per_gpu": {"bare": bare["steady_images_per_s"], "pipeline": rate},
                "target_images_per_s": m.target_images_per_s,
                "passed": None if not rate else rate >= m.target_images_per_s,
                "busy_fraction_bare_cuda_events": round(statistics.median(busy_bare), 4) if busy_bare else None,
                "busy_fraction_pipeline_nvml": [r.get("gpu_busy_fraction_nvml") for r in pipe["runs"]],
                "busy_fraction_pipeline_estimate": (
                    round(rate * statistics.median(per_image), 4) if per_image and rate else None
                ),
                "busy_fraction_method": "bare: UNet spans from CUDA events over the batches after the first / "
                "their wall time; pipeline: NVML utilisation between the first and last write when pynvml is "
                "installed, and the estimate pipeline images/s x UNet GPU seconds per image (bare)",
            },
            "same_images": s.same_images,
        }
    return blocks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, help="images per variant (CPU default 480; GPU: sd15 128, sdxl 48)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant, interleaved; medians reported")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few images, results under out/")
    parser.add_argument("--job", type=Path, default=DEFAULT_JOB, help="the job whose model and settings are used")
    parser.add_argument("--variants", nargs="+", help=f"CPU variants to run (default all: "
                        f"{', '.join(v.name for v in CPU_VARIANTS)})")  # fmt: skip
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/pipeline-<mode>-<machine>)")
    gpu = parser.add_argument_group("GPU mode")
    gpu.add_argument("--gpu", action="store_true", help="real-size SD 1.5 and SDXL on CUDA")
    gpu.add_argument("--gpu-models", nargs="+", choices=sorted(GPU_MODELS), default=sorted(GPU_MODELS))
    gpu.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    gpu.add_argument("--compile", action="store_true", help="torch.compile the UNet (diffgen's compute.torch_compile)")
    gpu.add_argument(
        "--models-dir",
        type=Path,
        default=ROOT / "examples" / "models",
        help="where the real-size folders are built once (default examples/models/, git-ignored)",
    )
    gpu.add_argument("--clip-bpe", type=Path, help="CLIP's bpe_simple_vocab_16e6.txt.gz for the real tokenizer")
    args = parser.parse_args(argv)  # fmt: skip
    if args.repeats < 1 or (args.images is not None and args.images < 4):
        parser.error("--repeats must be >= 1 and --images >= 4")
    unknown = set(args.variants or []) - {v.name for v in CPU_VARIANTS}
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}")
    if args.gpu and not torch.cuda.is_available():
        print(
            f"--gpu needs CUDA, and torch {torch.__version__} sees none (CUDA build: {torch.version.cuda}); "
            "nothing was run",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    info = machine()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    models = run_gpu(args) if args.gpu else run_cpu(args)
    info["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    mode = "gpu" if args.gpu else "cpu"
    result = {
        "benchmark": "pipeline vs bare diffusers loop (issue #8)",
        "mode": mode,
        "quick": args.quick,
        "command": " ".join(["python", "-m", "benchmarks.pipeline", *(sys.argv[1:] if argv is None else argv)]),
        "created_at": started.isoformat(),
        "session_wall_s": round(time.perf_counter() - t0, 1),
        "machine": info,
        "versions": versions(),
        "method": METHOD,
        "targets": TARGETS,
        "models": models,
    }
    folder = QUICK_RESULTS if args.quick else RESULTS
    out = args.out or folder / f"pipeline-{mode}-{machine_slug(info, args.gpu)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(result))
    print(f"\nsession {result['session_wall_s']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
