"""`diffgen utility OUTPUT_URI --real REAL_URI`: score an output's usefulness for training (train on
synthetic, test on real) and write qc/utility.json, and its section into qc/report.html.

The settings are the output's own QC settings (its run.json's `job.qc`, or `--job`'s `qc:` section),
with `--real`, `--label-column` and `--set qc.utility.KEY=VALUE` on top.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from diffgen.dataset import storage
from diffgen.dataset.layout import UTILITY_JSON
from diffgen.schemas.errors import format_validation_error
from diffgen.schemas.job import JobSpecError, apply_overrides
from diffgen.schemas.qc import QcSpec
from diffgen.schemas.utility import UtilityReport

log = logging.getLogger(__name__)


def utility_settings(
    output: str, *, real: str | None = None, label_column: str | None = None, job: str | None = None,
    overrides: list[str] | None = None,
) -> QcSpec:  # fmt: skip
    """The QC settings with `qc.utility` for scoring `output`; `JobSpecError` names what is wrong."""
    from diffgen.jobs.qc import qc_spec

    qc = qc_spec(output, job=job).model_dump()
    qc["utility"] = dict(qc.get("utility") or {})
    if real is not None:
        qc["utility"]["real"] = real if "://" in real else str(Path(real).resolve())
    if label_column is not None:
        qc["utility"]["label_column"] = label_column
    for item in overrides or []:
        if not item.startswith("qc."):
            raise JobSpecError(f"--set {item!r}: `diffgen utility` takes only qc.* settings")
    data = apply_overrides({"qc": qc}, overrides or [])
    try:
        return QcSpec.model_validate(data["qc"])
    except ValidationError as e:
        raise JobSpecError(format_validation_error("diffgen utility settings (--real, --set)", e)) from None


def score(output: str, **kwargs) -> UtilityReport:
    """Check the real set against the output's labels, then score (no Ray: the images are read here)."""
    from diffgen.reporting.utility import score_output

    spec = utility_settings(output, **kwargs)
    return score_output(output, spec, created_at=datetime.now(UTC))


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("utility", help="train on synthetic, test on real: write qc/utility.json")
    parser.add_argument("output", metavar="OUTPUT_URI")
    parser.add_argument("--real", help="labelled real images: class subfolders, or Parquet (qc.utility.real)")
    parser.add_argument("--label-column", help="the label column of the index and a real Parquet (default label)")
    parser.add_argument("--job", help="take the qc: section from this job file instead of the output's run.json")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="qc.KEY=VALUE",
        help="change a setting, e.g. --set qc.utility.few_shot=5 (repeatable)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(handler=command)
    return parser


def summary(report: UtilityReport) -> dict[str, object]:
    """What `diffgen utility` prints: the headline numbers with their intervals."""
    probes = {p.name: p.accuracy.model_dump() for p in report.probes}
    return {
        "output": report.output,
        "utility": storage.join(report.output, UTILITY_JSON),
        "backbone": report.backbone,
        "classes": report.classes,
        "accuracy": probes,
        "ratio": report.ratio.model_dump(),
        "augmentation_gain": report.augmentation_gain.model_dump(),
        "few_shot": report.few_shot,
        "warnings": report.warnings,
    }


def command(args: argparse.Namespace) -> int:
    from diffgen.jobs import api

    try:
        report = api.utility(args.output, real=args.real, label_column=args.label_column, job=args.job,
                             overrides=args.overrides)  # fmt: skip
    except api.RunError as e:
        log.error("%s", e)
        return e.exit_code
    print(json.dumps(summary(report), indent=2))
    return api.EXIT_OK
