"""The `diffgen` command line.

Exit codes (an orchestrator's contract):
  0  complete: every expected image written
  1  infrastructure failure: the run could not finish (cluster, storage, model)
  2  invalid input: job spec or manifest rejected before anything was generated
  3  partial: the run finished but some images were rejected or failed
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from diffgen.loading import ModelLoadError
from schemas.job import JobSpecError, load_job_spec
from schemas.manifest import ManifestError

EXIT_OK, EXIT_INFRA, EXIT_INVALID, EXIT_PARTIAL = 0, 1, 2, 3

log = logging.getLogger("diffgen")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("filelock", "urllib3", "botocore", "s3fs", "aiobotocore", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job spec YAML")
    parser.add_argument("--manifest", help="manifest Parquet URI (overrides the job spec)")
    parser.add_argument("--output", help="output URI (overrides the job spec)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a job spec field, e.g. --set sampler.steps=20 (repeatable)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")


def run_command(args: argparse.Namespace) -> int:
    """Run a job; the return value is the process exit code."""
    # Set before Ray starts so local workers inherit them: no hub access, no per-import chatter.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from pipelines.generate import run

    try:
        spec = load_job_spec(args.job, overrides=args.overrides, manifest=args.manifest, output=args.output)
        summary = run(spec)
    except (JobSpecError, ManifestError, ModelLoadError) as e:
        log.error("%s", e)
        return EXIT_INVALID
    print(summary.model_dump_json(indent=2))
    c = summary.counts
    log.info(
        "run %s %s: %d/%d images written, %d rejected, %d failed in %.1fs (%.2f images/s) -> %s",
        summary.run_id, summary.status, c.images_written, c.images_expected, c.rejected, c.failed,
        summary.wall_time_s, summary.images_per_second, summary.output,
    )  # fmt: skip
    return EXIT_OK if summary.status == "complete" else EXIT_PARTIAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffgen", description="Synthetic image datasets with diffusion models.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="generate images for a manifest")
    add_run_arguments(run_parser)
    run_parser.set_defaults(handler=run_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
