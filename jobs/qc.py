"""`diffgen qc OUTPUT_URI`: score an output written earlier and rewrite its qc/report.json and .html.

The QC settings are the ones the output was made with (its run.json's `job.qc`), changed by
`--job` (another job file's `qc:` section) and `--set qc.KEY=VALUE` overrides. The index is never
changed: written images that fail today's thresholds are counted as `would_reject` in the report.
"""

from __future__ import annotations

import argparse
import json
import logging

from pydantic import ValidationError

from diffgen.dataset import storage
from diffgen.dataset.index import read_index
from diffgen.dataset.layout import REPORT_HTML, RUN_FILE
from diffgen.schemas.errors import format_validation_error
from diffgen.schemas.job import JobSpecError, apply_overrides, load_job_spec
from diffgen.schemas.qc import QcSpec
from diffgen.schemas.report import QcReport

log = logging.getLogger(__name__)


def qc_spec(output: str, *, job: str | None = None, overrides: list[str] | None = None) -> QcSpec:
    """The QC settings for rescoring `output`, enabled; `JobSpecError` names what is wrong."""
    if job is not None:
        data = {"qc": load_job_spec(job).qc.model_dump()}
    else:
        try:
            run = json.loads(storage.read_bytes(storage.join(output, RUN_FILE)))
            data = {"qc": dict(run["job"]["qc"])}
        except FileNotFoundError:
            log.info("%s has no run.json: QC with the default settings and --set overrides", output)
            data = {"qc": {}}
        except (ValueError, KeyError, TypeError) as e:
            raise JobSpecError(f"{storage.join(output, RUN_FILE)}: cannot read the job's qc section ({e})") from None
    for item in overrides or []:
        if not item.startswith("qc."):
            raise JobSpecError(f"--set {item!r}: `diffgen qc` takes only qc.* settings")
    data = apply_overrides(data, overrides or [])
    data["qc"]["enabled"] = True
    try:
        return QcSpec.model_validate(data["qc"])
    except ValidationError as e:
        raise JobSpecError(format_validation_error("diffgen qc settings", e)) from None


def rescore(output: str, *, job: str | None = None, overrides: list[str] | None = None) -> QcReport:
    """Score every written image of `output` again and rewrite its QC report (the index stays as it is)."""
    spec = qc_spec(output, job=job, overrides=overrides)
    if read_index(output) is None:
        raise JobSpecError(f"{output} has no index/ folder: not a diffgen output")
    from diffgen.pipelines.qc import qc_output  # the model stack and Ray import only once the input is known good

    return qc_output(output, spec)


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("qc", help="score an existing output again and rewrite its qc/report.*")
    parser.add_argument("output", metavar="OUTPUT_URI")
    parser.add_argument("--job", help="take the qc: section from this job file instead of the output's run.json")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="qc.KEY=VALUE",
        help="change a QC setting, e.g. --set qc.min_clip_score=25 (repeatable)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def summary(report: QcReport) -> dict[str, object]:
    """What `diffgen qc` prints: the counts, today's rejections and the FID per group."""
    return {
        "output": report.output,
        "report": storage.join(report.output, REPORT_HTML),
        "counts": report.counts,
        "would_reject": report.would_reject,
        "reasons": report.reasons,
        "fid": None if report.fid is None else {g.group: g.fid for g in report.fid.groups},
        "fid_backbone": None if report.fid is None else report.fid.backbone,
        "fid_note": report.fid_note,
    }
