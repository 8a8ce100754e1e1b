"""What actors and torch threads make of the same cores, against bare loops side by side.

    python -m benchmarks.scaling [--images N] [--repeats R] [--quick] [--variants ...]

On the job's model and settings (as `benchmarks.overhead`), in one process session:

  bare-1t       a plain diffusers loop on 1 thread
  bare-2x1      two bare loops at once, in two processes on 1 thread each, half the images each: what
                the two cores give two generators with nothing else running (the actors' yardstick)
  actors-1x2    the pipeline (QC, watermark, provenance, local folder), 1 actor x 2 threads (both cores:
                OpenMP threads that share their cores with the QC, write and Ray processes)
  actors-1x1    the pipeline, 1 actor x 1 thread
  actors-2x1    the pipeline, 2 actors x 1 thread (the two cores split between two actors)
  actors-2x1-ray-niceness
                actors-2x1 with `compute.helper_niceness=null`: QC and writers at Ray's worker niceness
                (15, the generators') instead of 19

Ratios: actors_2_over_1 (target from issue #8), actors_2x1_over_1x2, bare_2_processes_over_1,
actors_2x1_over_bare_2x1, helper_niceness_2x1. Each pipeline variant records CPU seconds per process role
(`cpu_profile`). The rates and their method are those of `benchmarks.overhead`.

Results: benchmarks/results/scaling-cpu-<machine>.json (with --quick: out/benchmarks/), and a table on stdout.
"""

from __future__ import annotations

from benchmarks.results import PIPELINE_BENCHMARK
from benchmarks.runner import Question, main_cpu

QUESTION = Question(
    module="benchmarks.scaling",
    result_name="scaling",
    benchmark=f"{PIPELINE_BENCHMARK}: actors and threads on the same cores",
    variants=("bare-1t", "bare-2x1", "actors-1x2", "actors-1x1", "actors-2x1", "actors-2x1-ray-niceness"),
)


def main(argv: list[str] | None = None) -> int:
    return main_cpu(QUESTION, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
