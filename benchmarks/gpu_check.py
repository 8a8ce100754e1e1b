"""The GPU check: everything a short GPU loan should measure, in one unattended command.

    python -m benchmarks.gpu_check [--budget-s 450] [--out FILE]     # on a CUDA machine
    python -m benchmarks.gpu_check --cpu-smoke                       # the same code, tiny, on this CPU

On one CUDA GPU with no network, in order, each step timed and written to the results file as soon as
it ends (a loan that runs out still leaves every finished step on disk):

  1. build   real-size Stable Diffusion 1.5 with random weights on the GPU (`lab.builders.real_size`)
  2. sd15    the bare diffusers loop against `diffgen run` (QC + watermark + provenance, local folder),
             512 px, 25 steps, CFG 7.5, bf16, SDPA, channels-last, batch 8, 1 generation actor
  3. actors  the pipeline with 2 generation actors sharing the GPU (0.375 GPU each: the QC actor holds
             the last 0.25), against step 2's one actor
  4. fewstep 4 steps, guidance off (the few-step setting of distilled models), bare and pipeline
  5. stages  the CPU cost of every stage after generation at 512 px on this machine's cores
             (`benchmarks.stage_costs`, QC's CLIP at ViT-L/14 size on the GPU and on the CPU)
  6. options torch_compile, cpu_offload and fp16 each run once through the pipeline: each reports its
             rate or the error it raised (nothing is hidden), while the budget lasts

Steps are skipped, and say so, when fewer seconds remain than they need (`--budget-s`, default 450: the
whole check fits an 8-minute loan with start-up to spare). `--cpu-smoke` runs the same steps on the
embedded default (micro-sd, 64 px) on the CPU in under 2 minutes, so the first GPU lent is spent
measuring, not debugging. The results file is $OUT/gpu-check.json when $OUT is set, else
benchmarks/results/gpu-check-<machine>.json (with --cpu-smoke: out/benchmarks/gpu-check-smoke.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import machine, machine_slug, versions
from benchmarks.paths import DEFAULT_JOB, MODELS_DIR, QUICK_RESULTS, RESULTS
from benchmarks.results import write_result
from benchmarks.variants import Kind, Variant

TARGETS = {
    "sd15_pipeline_over_bare": 0.95,
    "sd15_images_per_s": 6.8,
    "two_actors_over_one": 1.0,
}


@dataclass(frozen=True)
class Setting:
    """What a step runs: the model, its size and sampling, and the images per variant."""

    model: str  # a model folder
    width: int
    steps: int
    guidance: float
    batch: int
    images: int
    device: str
    dtype: str
    gpu_share: float  # per generation actor, with one actor

    def overrides(self, **changes: object) -> list[str]:
        values = {
            "model.id": self.model, "sampler.width": self.width, "sampler.height": self.width,
            "sampler.steps": self.steps, "sampler.guidance_scale": self.guidance, "compute.batch_size": self.batch,
            "compute.device": self.device, "compute.dtype": self.dtype, "compute.channels_last": self.device == "cuda",
        }  # fmt: skip
        if self.device == "cuda":
            values["compute.gpus_per_actor"] = self.gpu_share
        values.update(changes)
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]


BARE = Variant("bare", Kind.BARE, "plain diffusers loop")
PIPELINE = Variant("pipeline", Kind.PIPELINE, "diffgen.jobs.api.run, 1 generation actor, QC + watermark + provenance")
TWO_ACTORS = Variant("pipeline-2-actors", Kind.PIPELINE, "as pipeline, 2 generation actors", actors=2)


def _session(setting: Setting, variants: list[Variant], work: Path, **changes: object) -> dict:
    """One benchmark session (benchmarks.session) of `variants` under `setting` (plus `changes`)."""
    from benchmarks.session import session, summarise

    work.mkdir(parents=True, exist_ok=True)
    s = session(variants, DEFAULT_JOB, setting.overrides(**changes), setting.images, 1, work,
                gpu=setting.device == "cuda")  # fmt: skip
    summary = summarise(s.runs, variants)
    rates = {name: v.get("steady_images_per_s") or v.get("e2e_images_per_s") for name, v in summary.items()}
    return {"images_per_s": rates, "variants": summary, "same_images": s.same_images}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


class Check:
    """Runs the steps in order against a deadline, writing the results after each."""

    def __init__(self, out: Path, budget_s: float, header: dict):
        self.out, self.deadline = out, time.monotonic() + budget_s
        self.result = {**header, "steps": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, needs_s: float, fn: Callable[[], dict]) -> dict | None:
        if self.left() < needs_s:
            self.result["steps"][name] = {"status": "skipped", "why": f"{self.left():.0f} s left, needs ~{needs_s:.0f}"}
            self._save()
            print(f"{name}: skipped ({self.left():.0f} s left)", flush=True)
            return None
        print(f"{name}: running ({self.left():.0f} s left)", flush=True)
        started = time.monotonic()
        try:
            found = {"status": "ok", **fn()}
        except Exception as e:  # noqa: BLE001  (a failing step is a finding: reported, and the check goes on)
            found = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                     "traceback": traceback.format_exc(limit=8)}  # fmt: skip
        found["seconds"] = round(time.monotonic() - started, 1)
        self.result["steps"][name] = found
        self._save()
        print(f"{name}: {found['status']} in {found['seconds']} s", flush=True)
        return found

    def _save(self) -> None:
        write_result(self.result, self.out)


def _build(smoke: bool, models: Path) -> tuple[Setting, dict]:
    if smoke:
        from diffgen.schemas.job import load_job_spec

        folder = load_job_spec(DEFAULT_JOB).model.id
        return Setting(folder, 64, 4, 7.5, 4, 8, "cpu", "fp32", 0.0), {"model": folder, "built": False}
    from lab.builders.real_size import build_real_size

    folder = models / "sd15-real-size"
    built = not (folder / "model_index.json").is_file()
    if built:
        build_real_size("sd15", folder, device="cuda")
    return Setting(str(folder), 512, 25, 7.5, 8, 64, "cuda", "bf16", 0.75), {"model": str(folder), "built": built}


def run_check(smoke: bool, budget_s: float, out: Path, models: Path) -> dict:
    import torch

    info = machine()
    header = {
        "benchmark": "gpu check", "mode": "cpu-smoke" if smoke else "gpu", "created_at": datetime.now(UTC).isoformat(),
        "command": "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:]), "machine": info,
        "versions": versions(), "budget_s": budget_s, "targets": TARGETS, "method": __doc__.split("\n\n")[2],
    }  # fmt: skip
    check = Check(out, budget_s, header)
    made: list[Setting] = []

    def build() -> dict:
        setting, found = _build(smoke, models)
        made.append(setting)
        return found

    built = check.step("build", 30 if smoke else 90, build)
    if built is None or built["status"] != "ok":
        return check.result
    setting = made[0]
    share = setting.gpu_share
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)

        def sd15() -> dict:
            found = _session(setting, [BARE, PIPELINE], work / "sd15")
            rates = found["images_per_s"]
            found["pipeline_over_bare"] = _ratio(rates["pipeline"], rates["bare"])
            return found

        base = check.step("sd15", 25 if smoke else 120, sd15)

        def actors() -> dict:
            changes = {"compute.gpus_per_actor": share / 2} if setting.device == "cuda" else {}
            changes |= {} if setting.device == "cuda" else {"compute.threads_per_actor": 1}
            found = _session(setting, [TWO_ACTORS], work / "actors", **changes)
            one = (base or {}).get("images_per_s", {}).get("pipeline")
            found["two_actors_over_one"] = _ratio(found["images_per_s"]["pipeline-2-actors"], one)
            return found

        check.step("actors", 20 if smoke else 80, actors)
        few = Setting(setting.model, setting.width, 4, 1.0, setting.batch, setting.images, setting.device,
                      setting.dtype, share)  # fmt: skip
        check.step("fewstep", 15 if smoke else 60, lambda: _session(few, [BARE, PIPELINE], work / "few"))

        def stages() -> dict:
            from benchmarks.stage_costs import measure_size

            torch.set_num_threads(1)
            size, n = (128, 2) if smoke else (512, 6)
            clips = () if smoke else ("vit-l-14",)
            return measure_size(size, n, clips, work / "clip")

        check.step("stages", 15 if smoke else 60, stages)
        options = {"fp16": {"compute.dtype": "fp16"}, "torch_compile": {"compute.torch_compile": True},
                   "cpu_offload": {"compute.cpu_offload": True}}  # fmt: skip
        if smoke:  # fp16 and offload need CUDA, compiling takes minutes on 2 cores: channels-last stands in
            options = {"channels_last": {"compute.channels_last": True}}
        for name, changes in options.items():
            check.step(f"option_{name}", 15 if smoke else 90,
                       lambda c=changes, n=name: _session(setting, [PIPELINE], work / n, **c))  # fmt: skip
    check.result["summary"] = summary(check.result)
    check._save()
    return check.result


def summary(result: dict) -> dict:
    steps = result["steps"]

    def get(step: str, *keys: str):
        value = steps.get(step, {})
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        return value

    return {
        "pipeline_over_bare": get("sd15", "pipeline_over_bare"),
        "pipeline_images_per_s": get("sd15", "images_per_s", "pipeline"),
        "bare_images_per_s": get("sd15", "images_per_s", "bare"),
        "two_actors_over_one": get("actors", "two_actors_over_one"),
        "fewstep_images_per_s": get("fewstep", "images_per_s"),
        "post_generation_cpu_ms": get("stages", "post_generation_cpu_ms"),
        "failed": sorted(k for k, v in steps.items() if v.get("status") == "failed"),
        "skipped": sorted(k for k, v in steps.items() if v.get("status") == "skipped"),
    }


def table(result: dict) -> str:
    s = result["summary"]
    rows = [("pipeline / bare", s["pipeline_over_bare"]), ("pipeline images/s", s["pipeline_images_per_s"]),
            ("bare images/s", s["bare_images_per_s"]), ("2 actors / 1", s["two_actors_over_one"]),
            ("few-step images/s", json.dumps(s["fewstep_images_per_s"])),
            ("post-generation CPU ms/image", json.dumps(s["post_generation_cpu_ms"])),
            ("failed steps", ", ".join(s["failed"]) or "none"), ("skipped steps", ", ".join(s["skipped"]) or "none")]  # fmt: skip
    return "\n".join(f"{name:<30} {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps at tiny size on the CPU")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for all steps (450; smoke 110)")
    parser.add_argument("--out", type=Path, help="results file (default: see the module's docs)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    args = parser.parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("the GPU check needs CUDA (torch sees none); --cpu-smoke runs it on the CPU", file=sys.stderr)
        return 2
    from benchmarks.environment import prepare_environment

    prepare_environment()
    if args.out is not None:
        out = args.out
    elif os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu-check.json"
    elif args.cpu_smoke:
        out = QUICK_RESULTS / "gpu-check-smoke.json"
    else:
        out = RESULTS / f"gpu-check-{machine_slug(machine(), gpu=True)}.json"
    budget = args.budget_s if args.budget_s is not None else (110.0 if args.cpu_smoke else 450.0)
    result = run_check(args.cpu_smoke, budget, out, args.models_dir)
    if "summary" in result:
        print(table(result))
    print(f"results: {out}")
    failed = result.get("summary", {}).get("failed") or []
    return 1 if failed or "summary" not in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
