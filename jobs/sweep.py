"""`diffgen sweep JOB.yaml --grid KEY=V1,V2 [--grid ...] --output URI`: run the job at every point of the
grid (one output prefix each, resumable, one Ray session), score each point, and write sweep.json and
sweep.html with the best point per metric (`diffgen.pipelines.sweep`)."""

from __future__ import annotations

import argparse
import json
import logging

from diffgen.dataset import storage
from diffgen.dataset.layout import SWEEP_HTML
from diffgen.schemas.sweep import SweepReport

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("sweep", help="run a job over a grid of settings and score every point")
    parser.add_argument("job", help="job spec YAML")
    parser.add_argument(
        "--grid", action="append", default=[], required=True, metavar="KEY=V1,V2,...",
        help="a job field and its values, e.g. --grid sampler.guidance_scale=1.5,3,7.5 (repeatable: every combination)",
    )  # fmt: skip
    parser.add_argument("--manifest", help="manifest Parquet URI (overrides the job spec)")
    parser.add_argument("--output", help="the sweep's output: each point writes to OUTPUT/points/<name>/")
    parser.add_argument("--real", help="labelled real images: each point also gets a utility score")
    parser.add_argument("--label-column", help="the label column for the utility score (default label)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a job spec field at every point (repeatable)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(handler=command)
    return parser


def summary(report: SweepReport) -> dict[str, object]:
    return {
        "output": report.output,
        "page": storage.join(report.output, SWEEP_HTML),
        "points": {p.name: {k: v for k, v in p.metrics.items() if v is not None} for p in report.points},
        "best": {m.name: m.best for m in report.metrics if m.best is not None},
    }


def command(args: argparse.Namespace) -> int:
    from diffgen.jobs import api

    try:
        report = api.sweep(args.job, args.grid, manifest=args.manifest, output=args.output, real=args.real,
                           label_column=args.label_column, overrides=args.overrides)  # fmt: skip
    except api.RunError as e:
        log.error("%s", e)
        return e.exit_code
    print(json.dumps(summary(report), indent=2))
    return api.EXIT_OK
