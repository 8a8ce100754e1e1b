"""The `diffgen` command line.

Exit codes (an orchestrator's contract):
  0  complete: every expected image written
  1  infrastructure failure: the run could not finish (cluster, storage, model runtime)
  2  invalid input: job spec, manifest, model folder or output rejected before generation
  3  partial: the run finished; some images were rejected or failed, within policy.max_lost_fraction
  4  failed: the run finished but lost more images than policy.max_lost_fraction allows
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jobs import api

log = logging.getLogger("diffgen")


def configure_logging(verbose: bool) -> None:
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


def _job_kwargs(args: argparse.Namespace) -> dict:
    return {"manifest": args.manifest, "output": args.output, "overrides": args.overrides}


def validate_command(args: argparse.Namespace) -> int:
    """Pre-flight: print the plan; exit 0 only when the run would start."""
    try:
        described = api.plan(args.job, **_job_kwargs(args))
    except api.RunError as e:
        log.error("%s", e)
        return e.exit_code
    print(json.dumps(described, indent=2))
    return api.EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """Run a job; the return value is the process exit code."""
    if getattr(args, "dry_run", False):
        return validate_command(args)
    try:
        result = api.run(args.job, **_job_kwargs(args))
        summary = result.summary
    except api.RunFailedError as e:
        summary = e.summary
    except api.RunError as e:
        log.error("%s", e)
        return e.exit_code
    print(summary.model_dump_json(indent=2))
    c = summary.counts
    log.info(
        "run %s %s: %d/%d images written, %d rejected, %d failed in %.1fs (%.2f images/s) -> %s",
        summary.run_id, summary.status, c.images_written, c.images_expected, c.rejected, c.failed,
        summary.wall_time_s, summary.images_per_second, summary.output,
    )  # fmt: skip
    return api.EXIT_BY_STATUS[summary.status]


def verify_command(args: argparse.Namespace) -> int:
    """Read each image's provenance, XMP, C2PA manifest and watermark; exit 0 only if all agree."""
    from diffgen import storage
    from diffgen.verify import verify_image

    anchors = storage.read_bytes(args.trust_anchors) if args.trust_anchors else None
    all_ok, reports = True, {}
    for uri in args.images:
        try:
            report = verify_image(storage.read_bytes(uri), trust_anchors_pem=anchors, require_c2pa=args.require_c2pa)
        except (OSError, ValueError) as e:
            log.error("%s: cannot read: %s", uri, e)
            all_ok = False
            continue
        all_ok &= report.ok
        reports[uri] = report.to_dict()
        if not args.json:
            print(f"{uri}: {'OK' if report.ok else 'PROBLEM'}")
            for line in report.summary_lines():
                print(f"  {line}")
    if args.json:
        print(json.dumps(reports, indent=2, default=str))
    return api.EXIT_OK if all_ok else api.EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffgen", description="Synthetic image datasets with diffusion models.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="generate images for a manifest")
    add_run_arguments(run_parser)
    run_parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; write nothing")
    run_parser.set_defaults(handler=run_command)
    validate_parser = commands.add_parser("validate", help="check job, manifest, model and output; print the plan")
    add_run_arguments(validate_parser)
    validate_parser.set_defaults(handler=validate_command)
    verify_parser = commands.add_parser("verify", help="check an image's watermark, provenance and C2PA")
    verify_parser.add_argument("images", nargs="+", metavar="IMAGE_URI")
    verify_parser.add_argument("--trust-anchors", help="PEM root certificate(s) to trust for C2PA")
    verify_parser.add_argument("--require-c2pa", action="store_true", help="an image without C2PA fails")
    verify_parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    verify_parser.set_defaults(handler=verify_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "verbose", False))
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
