"""What every benchmark script shares: its command line, and the flow from a measurement to a results file."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.environment import prepare_environment
from benchmarks.machine import machine, machine_slug, versions
from benchmarks.paths import DEFAULT_JOB
from benchmarks.ratios import ratios
from benchmarks.results import result_document, result_path, settings_of, write_result
from benchmarks.session import session, summarise
from benchmarks.table import table
from benchmarks.variants import cpu_variants

# Images the stage profile takes from the front of a question's manifest when the question has variants.
PROFILE_IMAGES = 40
QUICK_PROFILE_IMAGES = 8


@dataclass(frozen=True)
class Question:
    """A CPU question: the variants it runs, in one session, and whether it profiles the stages first."""

    module: str  # benchmarks.<name>: its command
    result_name: str  # its results file: <result_name>-cpu-<machine>.json
    benchmark: str  # the results file's `benchmark`
    variants: tuple[str, ...]
    profile: bool = False
    images: int = 480  # per variant; a question without variants: images profiled
    quick_images: int = 16


def add_common_arguments(parser: argparse.ArgumentParser, images_help: str, repeats: bool = True) -> None:
    parser.add_argument("--images", type=int, help=images_help)
    if repeats:
        parser.add_argument("--repeats", type=int, default=1, help="runs per variant, interleaved; medians reported")
    else:
        parser.set_defaults(repeats=1)
    parser.add_argument("--quick", action="store_true", help="a smoke test: few images, results under out/")
    parser.add_argument("--job", type=Path, default=DEFAULT_JOB, help="the job whose model and settings are used")
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/<name>-<mode>-<machine>)")


def cpu_parser(question: Question, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {question.module}", description=description)
    per = "per variant" if question.variants else "profiled"
    images_help = f"images {per} (default {question.images}, --quick {question.quick_images})"
    add_common_arguments(parser, images_help, repeats=bool(question.variants))
    if question.variants:
        parser.add_argument("--variants", nargs="+", metavar="VARIANT",
                            help=f"variants to run (default all: {', '.join(question.variants)})")  # fmt: skip
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, allowed: tuple[str, ...]) -> None:
    """Refuses, through `parser.error`, repeats < 1, images < 4 and a variant `allowed` does not name."""
    if args.repeats < 1 or (args.images is not None and args.images < 4):
        parser.error("--repeats must be >= 1 and --images >= 4")
    unknown = [n for n in getattr(args, "variants", None) or [] if n not in allowed]
    if unknown:
        parser.error(f"Unknown variant '{unknown[0]}'. Choose from: {', '.join(allowed)}")


def measure_cpu(args: argparse.Namespace, question: Question) -> dict:
    """The question's session on the job's model and settings: the results file's `models`, one `cpu` block."""
    images = args.images or (question.quick_images if args.quick else question.images)
    variants = cpu_variants(getattr(args, "variants", None) or question.variants)
    profile_images = 0
    if question.profile:
        profiled = QUICK_PROFILE_IMAGES if args.quick else PROFILE_IMAGES
        profile_images = min(images, profiled) if question.variants else images
    with tempfile.TemporaryDirectory(prefix="diffgen-bench-") as tmp:
        s = session(variants, args.job, [], images, args.repeats, Path(tmp), gpu=False, profile_images=profile_images)
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


def record(
    args: argparse.Namespace, argv: list[str] | None, *, module: str, result_name: str, benchmark: str, gpu: bool,
    measure: Callable[[], dict],
) -> int:
    """Runs `measure` on a described machine, writes the results file and prints its tables."""
    info = machine()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    models = measure()
    info["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    mode = "gpu" if gpu else "cpu"
    result = result_document(
        benchmark=benchmark, mode=mode, quick=args.quick,
        command=" ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)]),
        started=started.isoformat(), wall_s=time.perf_counter() - t0, machine=info, versions=versions(),
        models=models,
    )  # fmt: skip
    out = args.out or result_path(result_name, mode, machine_slug(info, gpu), args.quick)
    write_result(result, out)
    print(table(result))
    print(f"\nsession {result['session_wall_s']} s; wrote {out}")
    return 0


def main_cpu(question: Question, description: str, argv: list[str] | None) -> int:
    """A CPU question's `main`: parse, set up the environment, measure, record."""
    parser = cpu_parser(question, description)
    args = parser.parse_args(argv)
    check_arguments(parser, args, question.variants)
    prepare_environment()
    return record(args, argv, module=question.module, result_name=question.result_name,
                  benchmark=question.benchmark, gpu=False, measure=lambda: measure_cpu(args, question))  # fmt: skip
