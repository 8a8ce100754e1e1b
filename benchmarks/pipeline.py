"""Every CPU benchmark question in one session (or, with --gpu, the GPU question).

    python -m benchmarks.pipeline [--images N] [--repeats R] [--quick] [--variants ...]
    python -m benchmarks.pipeline --gpu [--gpu-models sd15 sdxl] [--compile] [--dtype bf16]

CPU mode times diffgen's stages first (`benchmarks.stage_profile`, on the first 40 images; --quick 8),
then runs the variants of `benchmarks.overhead` (the pipeline against a bare diffusers loop; QC, watermark,
S3) and `benchmarks.scaling` (actors and threads against bare loops side by side) together: each variant
once per round, --repeats rounds, interleaved in the registry's order (`benchmarks.variants.CPU_VARIANTS`),
N images a variant (default 480; --quick 16), medians reported. One session, so that every ratio, those
across questions included (best_pipeline_over_bare, default_threads_over_2), compares variants run side by
side. The variants, rates and method are described in those modules. GPU mode is `benchmarks.gpu`.

Results: benchmarks/results/pipeline-{cpu,gpu}-<machine>.json (with --quick: out/benchmarks/), and a table
on stdout; the committed results files were written by this command.
"""

from __future__ import annotations

import sys

from benchmarks import overhead, scaling, stage_profile
from benchmarks.environment import prepare_environment
from benchmarks.gpu import add_gpu_arguments, cuda_missing, measure_gpu
from benchmarks.results import PIPELINE_BENCHMARK
from benchmarks.runner import Question, check_arguments, cpu_parser, measure_cpu, record
from benchmarks.variants import CPU_VARIANT_NAMES

QUESTIONS = (overhead.QUESTION, scaling.QUESTION, stage_profile.QUESTION)
EVERY_CPU_QUESTION = Question(
    module="benchmarks.pipeline",
    result_name="pipeline",
    benchmark=PIPELINE_BENCHMARK,
    variants=tuple(name for name in CPU_VARIANT_NAMES if any(name in q.variants for q in QUESTIONS)),
    profile=any(q.profile for q in QUESTIONS),
)


def main(argv: list[str] | None = None) -> int:
    question = EVERY_CPU_QUESTION
    parser = cpu_parser(question, __doc__.split("\n\n")[0])
    gpu = add_gpu_arguments(parser)
    gpu.add_argument("--gpu", action="store_true", help="real-size SD 1.5 and SDXL on CUDA (benchmarks.gpu)")
    args = parser.parse_args(argv)
    check_arguments(parser, args, question.variants)
    if args.gpu and (why := cuda_missing()) is not None:
        print(why, file=sys.stderr)
        return 2
    prepare_environment()
    measure = (lambda: measure_gpu(args)) if args.gpu else (lambda: measure_cpu(args, question))
    return record(args, argv, module=question.module, result_name=question.result_name,
                  benchmark=question.benchmark, gpu=args.gpu, measure=measure)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
