"""The `diffgen` command line.

Exit codes (an orchestrator's contract):
  0  the run met its policy: complete, or partial within policy.max_lost_fraction after replacement
  1  infrastructure failure: the run could not finish (cluster, storage, model runtime)
  2  invalid input: job spec, manifest, model folder or output rejected before generation
  3  partial under policy.require_full (or --strict): some slots were left without an image
  4  failed: the run finished but lost more images than policy.max_lost_fraction allows
`submit --wait` returns the submitted run's own code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TextIO

from diffgen.jobs import api

log = logging.getLogger("diffgen")


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TerminalStream:
    """stderr shared by the log and a progress line redrawn in place: a log line first clears the progress line."""

    def __init__(self, stream: TextIO):
        self.stream, self.progress_shown = stream, False

    def write(self, text: str) -> None:
        if self.progress_shown:
            self.stream.write("\r\x1b[2K")
            self.progress_shown = False
        self.stream.write(text)

    def show_progress(self, line: str) -> None:
        self.stream.write(f"\r\x1b[2K{line}")
        self.stream.flush()
        self.progress_shown = True

    def flush(self) -> None:
        self.stream.flush()


class ProgressHandler(logging.Handler):
    """`diffgen.progress` records: on a terminal one line redrawn at every batch, else the periodic INFO lines."""

    def __init__(self, stream: TextIO | TerminalStream, formatter: logging.Formatter):
        super().__init__(logging.DEBUG)
        self.stream, self.line_format = stream, formatter

    def emit(self, record: logging.LogRecord) -> None:
        # A progress line that cannot be shown (a closed or broken stream) never fails the run: like every
        # logging handler, report it through handleError and go on.
        try:
            snapshot = getattr(record, "progress", None)
            if isinstance(self.stream, TerminalStream) and snapshot is not None:
                self.stream.show_progress(snapshot.line())
            elif record.levelno >= logging.INFO:
                self.stream.write(self.line_format.format(record) + "\n")
                self.stream.flush()
        except Exception:  # noqa: BLE001 - logging.Handler's contract
            self.handleError(record)


def configure_logging(
    verbose: bool, level: str | None = None, stream: TextIO | None = None
) -> TextIO | TerminalStream:
    """`-v` is debug with tracebacks; `--log-level` (or `--quiet`, i.e. warning) sets the level otherwise. A run's
    progress is one line redrawn in place on a terminal, a line every 10 s in a log file, none under --quiet."""
    stream = stream or sys.stderr
    chosen = logging.DEBUG if verbose else getattr(logging, (level or "info").upper())
    shared = TerminalStream(stream) if stream.isatty() else stream
    logging.basicConfig(level=chosen, format=LOG_FORMAT, stream=shared)
    progress = logging.getLogger("diffgen.progress")
    progress.propagate = False  # its own handler decides between the live line and the periodic lines
    progress.handlers = [ProgressHandler(shared, logging.Formatter(LOG_FORMAT))]
    if chosen > logging.INFO:
        progress.setLevel(logging.WARNING)
    else:
        progress.setLevel(logging.DEBUG if isinstance(shared, TerminalStream) or verbose else logging.INFO)
    # Ray Data's own progress is off below debug (pipelines/generate.py); so is its note that it is off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.INFO if verbose else logging.ERROR)
    return shared
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
    parser.add_argument(
        "--overwrite-changed", action="store_true",
        help="make again the committed records whose inputs changed (default: refuse; policy.changed_records)",
    )  # fmt: skip
    parser.add_argument(
        "--strict", action="store_true",
        help="exit 3 when any image asked for is left without one, even within policy (policy.require_full)",
    )  # fmt: skip
    parser.add_argument(
        "--quarantine-corrupt-index", action="store_true",
        help="move unreadable index shards to OUTPUT/quarantine/ and make their records again (policy.corrupt_index)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on errors")


def add_log_level_arguments(parser: argparse.ArgumentParser) -> None:
    """`--quiet` and `--log-level` for every subcommand (each also has `-v`)."""
    parser.add_argument("-q", "--quiet", dest="log_level", action="store_const", const="warning",
                        help="warnings and errors only, no progress")  # fmt: skip
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default info)")
    if not any("-v" in action.option_strings for action in parser._actions):
        parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on errors")


def add_calibrate_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibrate", action="store_true",
        help="time a few batches of the job's model here (load time excluded) to estimate the run",
    )  # fmt: skip


def _job_kwargs(args: argparse.Namespace) -> dict:
    overrides = list(args.overrides)
    if getattr(args, "overwrite_changed", False):
        overrides.append("policy.changed_records=overwrite")
    if getattr(args, "quarantine_corrupt_index", False):
        overrides.append("policy.corrupt_index=quarantine")
    if getattr(args, "strict", False):
        overrides.append("policy.require_full=true")
    return {"manifest": args.manifest, "output": args.output, "overrides": overrides}


def validate_command(args: argparse.Namespace) -> int:
    """Pre-flight: print the plan; exit 0 only when the run would start."""
    try:
        described = api.plan(args.job, calibrate=getattr(args, "calibrate", False), **_job_kwargs(args))
    except api.RunError as e:
        log.error("%s", e)
        return e.exit_code
    print(json.dumps(described, indent=2))
    log.info("estimate: %s", described["estimate"]["message"])
    return api.EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """Run a job; the return value is the process exit code."""
    if getattr(args, "dry_run", False):
        return validate_command(args)
    if getattr(args, "calibrate", False):
        log.error("--calibrate goes with --dry-run (or use `diffgen validate --calibrate`)")
        return api.EXIT_INVALID
    try:
        result = api.run(args.job, **_job_kwargs(args))
        summary = result.summary
    except api.RunFailedError as e:
        summary = e.summary
    except api.RunError as e:
        log.error("%s", e)
        log.debug("traceback", exc_info=e.__cause__)
        return e.exit_code
    print(summary.model_dump_json(indent=2))
    c = summary.counts
    log.info(
        "run %s %s: %d/%d images written, %d rejected, %d failed in %.1fs (%.2f images/s) -> %s",
        summary.run_id, summary.status, c.images_written, c.images_expected, c.rejected, c.failed,
        summary.wall_time_s, summary.images_per_second, summary.output,
    )  # fmt: skip
    return api.exit_code_of(summary)


def verify_command(args: argparse.Namespace) -> int:
    """Read each image's provenance, XMP, C2PA manifest and watermark; exit 0 only if all agree."""
    from diffgen.dataset import storage
    from diffgen.dataset.lookup import IndexLookup
    from diffgen.provenance.verify import verify_image

    lookup = IndexLookup(args.index).rows if args.index else None
    try:
        anchors = storage.read_bytes(args.trust_anchors) if args.trust_anchors else None
    except FileNotFoundError as e:
        log.error("--trust-anchors: %s", api.one_line(e))
        return api.EXIT_INVALID
    all_ok, unreadable, reports = True, False, {}
    for uri in args.images:
        try:
            report = verify_image(storage.read_bytes(uri), trust_anchors_pem=anchors, require_c2pa=args.require_c2pa,
                                  lookup=lookup)  # fmt: skip
        except (OSError, ValueError) as e:  # a missing or undecodable file is the caller's input, as everywhere: 2
            log.error("%s: cannot read: %s", uri, api.one_line(e))
            unreadable = True
            continue
        all_ok &= report.ok
        reports[uri] = report.to_dict()
        if not args.json:
            print(f"{uri}: {'OK' if report.ok else 'PROBLEM'}")
            for line in report.summary_lines():
                print(f"  {line}")
            for row in report.index_rows or []:
                print(f"  ROW   record {row.get('record_id')}  manifest row {row.get('id')}  run {row.get('run_id')}  "
                      f"model {row.get('model_id')}  prompt {row.get('prompt')!r}  ({row.get('output')})")
    if args.json:
        print(json.dumps(reports, indent=2, default=str))
    if unreadable:
        return api.EXIT_INVALID
    return api.EXIT_OK if all_ok else api.EXIT_FAILED


def submit_command(args: argparse.Namespace) -> int:
    """Submit a run to a Ray cluster's Job API; print the job id; with --wait, its exit code."""
    from diffgen.jobs import submit

    address = args.address or os.environ.get("RAY_ADDRESS", "")
    if not address.startswith(("http://", "https://")):
        log.error("submit needs --address http://HEAD:8265 (the head's dashboard), or RAY_ADDRESS set to it")
        return api.EXIT_INVALID
    job_id = None
    try:
        if args.preflight:
            api.plan(args.job, **_job_kwargs(args))
        prepared = submit.prepare(args.job, **_job_kwargs(args), image=args.image, upload=not args.no_upload,
                                  verbose=args.verbose)  # fmt: skip
        with submit.staged(prepared) as submission:
            client = submit.connect(address)
            job_id = submit.submit(client, submission, args.submission_id)
        log.info("Ray job %s on %s: %s", job_id, address, submission.entrypoint)
        print(job_id, flush=True)
        return submit.wait(client, job_id) if args.wait else api.EXIT_OK
    except api.RunError as e:
        log.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:
        if job_id is not None:
            log.warning("stopped waiting; Ray job %s goes on (ray job stop %s --address %s)", job_id, job_id, address)
        return 130


def qc_command(args: argparse.Namespace) -> int:
    """Rescore an output written earlier; print what the new report says."""
    from diffgen.jobs.qc import summary

    try:
        report = api.qc(args.output, job=args.job, overrides=args.overrides)
    except api.RunError as e:
        log.error("%s", e)
        return e.exit_code
    print(json.dumps(summary(report), indent=2))
    return api.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from diffgen import __version__

    parser = argparse.ArgumentParser(prog="diffgen", description="Synthetic image datasets with diffusion models.")
    parser.add_argument("--version", action="version", version=f"diffgen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="generate images for a manifest")
    add_run_arguments(run_parser)
    run_parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; write nothing")
    add_calibrate_argument(run_parser)
    run_parser.set_defaults(handler=run_command)
    validate_parser = commands.add_parser("validate", help="check job, manifest, model and output; print the plan")
    add_run_arguments(validate_parser)
    add_calibrate_argument(validate_parser)
    validate_parser.set_defaults(handler=validate_command)
    submit_parser = commands.add_parser("submit", help="run a job on a Ray cluster through its Job API")
    add_run_arguments(submit_parser)
    submit_parser.add_argument("--address", help="the head's dashboard, http://HEAD:8265 (default: $RAY_ADDRESS)")
    submit_parser.add_argument("--wait", action="store_true", help="stream the logs; exit with the run's exit code")
    submit_parser.add_argument(
        "--submission-id", help="Ray job id to use; submitting the same job under it again follows the first run"
    )
    code = submit_parser.add_mutually_exclusive_group()
    code.add_argument("--image", help="container image for the job (runtime_env image_uri); nothing is uploaded")
    code.add_argument(
        "--no-upload", action="store_true", help="use the cluster's own diffgen and the job file as given"
    )
    submit_parser.add_argument(
        "--preflight", action="store_true", help="first run the whole `validate` here (model, manifest, output)"
    )
    submit_parser.set_defaults(handler=submit_command)
    verify_parser = commands.add_parser("verify", help="check an image's watermark, provenance and C2PA")
    verify_parser.add_argument("images", nargs="+", metavar="IMAGE_URI")
    verify_parser.add_argument("--trust-anchors", help="PEM root certificate(s) to trust for C2PA")
    verify_parser.add_argument("--require-c2pa", action="store_true", help="an image without C2PA fails")
    verify_parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    verify_parser.add_argument("--index", nargs="+", metavar="OUTPUT_URI",
                               help="look the watermark up in these outputs' indexes and print the image's row")
    verify_parser.set_defaults(handler=verify_command)
    from diffgen.jobs.qc import add_parser as add_qc_parser

    add_qc_parser(commands).set_defaults(handler=qc_command)
    from diffgen.jobs.sweep import add_parser as add_sweep_parser
    from diffgen.jobs.utility import add_parser as add_utility_parser

    add_utility_parser(commands)
    add_sweep_parser(commands)
    for subparser in commands.choices.values():
        add_log_level_arguments(subparser)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but a flag the subcommand does not know is reported with that subcommand's usage."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(build_parser(), argv)
    verbose = getattr(args, "verbose", False)
    configure_logging(verbose, getattr(args, "log_level", None))
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a batch job's log gets one line, not a traceback (-v shows it)
        log.error("%s%s", api.one_line(e), "" if verbose else " (run with -v for the traceback)")
        log.debug("traceback", exc_info=e)
        return api.EXIT_INFRA


if __name__ == "__main__":
    sys.exit(main())
