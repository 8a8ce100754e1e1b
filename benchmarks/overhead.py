"""How close the full pipeline runs to a bare diffusers loop, and what QC, the watermark and S3 cost.

    python -m benchmarks.overhead [--images N] [--repeats R] [--quick] [--variants ...]

On the model and settings of a job file (default: examples/default/job.yaml, on the embedded default
model models/micro-sd), over the same N prompts (the example manifest's rows, repeated with distinct ids
and seeds), in one process session:

  bare          a plain diffusers loop: the pipeline class named by the folder's model_index.json via
                `from_pretrained`, the job's scheduler, size, steps, guidance and negative prompt, batches
                of `compute.batch_size`, one CPU torch.Generator per image; torch on 2 threads
  bare-1t       the same on 1 thread
  pipeline      `diffgen.jobs.api.run`: Ray Data, 1 generation actor x diffgen's default torch threads (the
                cores less one for the other stages: 1 on 2 cores), QC on, watermark + provenance
                on, PNG encode, local folder
  pipeline-s3   the same, written to moto's S3 server on 127.0.0.1 (as the tests use)
  no-qc         pipeline with `qc.enabled=false`
  no-watermark  pipeline with `provenance.watermark=false`: no embedding and no read-back check. The
                provenance record (PNG iTXt + XMP) has no switch and is still written; C2PA is off in
                every variant (the job's default)

Ratios: pipeline_over_bare, qc_on_over_off, watermark_on_over_off (targets from issue #8), s3_over_local,
bare_2_threads_over_1. The bare loop's first batch is checked against the pipeline's PNGs of the same rows
(`same_images`). Every pipeline variant starts its own Ray (stopped after the run), so its end-to-end time
includes Ray's start, the actors' start and model load, compaction, the QC report and run.json.

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
Ratios and targets use the steady rates; the script reports pass/fail and asserts nothing. With
--repeats R every variant runs R times, interleaved, and the median is reported.

Results: benchmarks/results/overhead-cpu-<machine>.json (with --quick: out/benchmarks/), and a table on stdout.
"""

from __future__ import annotations

from benchmarks.results import PIPELINE_BENCHMARK
from benchmarks.runner import Question, main_cpu

QUESTION = Question(
    module="benchmarks.overhead",
    result_name="overhead",
    benchmark=f"{PIPELINE_BENCHMARK}: overhead of the pipeline, QC, watermark, S3",
    variants=("bare", "bare-1t", "pipeline", "pipeline-s3", "no-qc", "no-watermark"),
)


def main(argv: list[str] | None = None) -> int:
    return main_cpu(QUESTION, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
