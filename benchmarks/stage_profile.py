"""What each of diffgen's CPU stages costs per image next to generation: generate, QC and write.

    python -m benchmarks.stage_profile [--images N] [--quick]

diffgen's GenerateStage, QcStage and WriteStage called one after the other in this process, on 1 thread,
without Ray (`benchmarks.stage_timing`), over the first N images of the benchmark manifest (default 40,
--quick 8), with the watermark on and off: seconds per image of each stage, what the watermark's
embedding and read-back cost, and the QC and write stages over generation.

Results: benchmarks/results/stage-profile-cpu-<machine>.json (with --quick: out/benchmarks/), in the
results format of `benchmarks.pipeline` (its `stage_profile` block, no variants).
"""

from __future__ import annotations

from benchmarks.results import PIPELINE_BENCHMARK
from benchmarks.runner import PROFILE_IMAGES, QUICK_PROFILE_IMAGES, Question, main_cpu

QUESTION = Question(
    module="benchmarks.stage_profile",
    result_name="stage-profile",
    benchmark=f"{PIPELINE_BENCHMARK}: stage profile",
    variants=(),
    profile=True,
    images=PROFILE_IMAGES,
    quick_images=QUICK_PROFILE_IMAGES,
)


def main(argv: list[str] | None = None) -> int:
    return main_cpu(QUESTION, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
