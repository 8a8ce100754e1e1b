"""The Python API for orchestrators that call Python directly (Airflow, Dagster, Prefect).

    from diffgen.jobs.api import run
    result = run("job.yaml", manifest="s3://b/m.parquet", output="s3://b/out")
    result.counts.images_written

`run` returns a `RunResult` for complete and partial runs and raises a `RunError`
subclass otherwise; each error carries the exit code the CLI would have returned.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from diffgen.dataset.index import CorruptIndexError
from diffgen.dataset.lease import LeaseHeldError, LeaseLostError, read_lease_holder
from diffgen.dataset.output import Output
from diffgen.dataset.resume import ChangedRecordsError
from diffgen.dataset.storage import UnsupportedUriError
from diffgen.generation.model_folder import ModelLoadError
from diffgen.schemas.job import JobSpec, JobSpecError, load_job_spec
from diffgen.schemas.manifest import ManifestError
from diffgen.schemas.report import QcReport
from diffgen.schemas.sweep import SweepReport
from diffgen.schemas.utility import UtilityReport
from diffgen.schemas.run import RunCounts, RunSummary

EXIT_OK, EXIT_INFRA, EXIT_INVALID, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2, 3, 4


def exit_code_of(summary: RunSummary) -> int:
    """The one rule every launcher follows (CLI, `python -m diffgen.jobs.generate`, `submit --wait`, Ray's job
    status, the Airflow DAG): 0 when the run met its policy (complete, or partial within
    policy.max_lost_fraction after replacement), 3 for a partial run under policy.require_full / --strict,
    4 when it lost more than the policy allows. 1 (infrastructure: a retry may fix it) and 2 (invalid
    input: a retry never will) come from errors before or during the run."""
    if summary.status == "failed":
        return EXIT_FAILED
    return EXIT_OK if summary.met_policy else EXIT_PARTIAL


class RunError(RuntimeError):
    exit_code = EXIT_INFRA


class InvalidInputError(RunError):
    """The job spec, manifest, model folder or output location was rejected before generation."""

    exit_code = EXIT_INVALID


class InfrastructureError(RunError):
    """The run could not finish: storage, cluster or model runtime failure."""

    exit_code = EXIT_INFRA


class RunFailedError(RunError):
    """The run finished but lost more images than `policy.max_lost_fraction` allows."""

    exit_code = EXIT_FAILED

    def __init__(self, summary: RunSummary):
        c = summary.counts
        super().__init__(
            f"run {summary.run_id} failed: {c.rejected} rejected + {c.failed} failed of {c.images_expected} images"
        )
        self.summary = summary


@dataclass(frozen=True)
class RunResult:
    summary: RunSummary

    @property
    def status(self) -> str:
        return self.summary.status

    @property
    def counts(self) -> RunCounts:
        return self.summary.counts

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.summary)


def _offline_env() -> None:
    # Set before Ray starts so local workers inherit them: no hub access, no per-import chatter.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _pipeline_infrastructure_errors() -> tuple[type[Exception], ...]:
    """The pipelines' infrastructure errors, from their modules only if already imported: a module that was
    never imported raised nothing, and importing it (Ray, the model stack) would cost seconds on every error."""
    names = {"diffgen.pipelines.plan": ("OutputError", "InputUnreachableError"),
             "diffgen.pipelines.resources": ("ClusterTooSmallError",)}  # fmt: skip
    return tuple(getattr(sys.modules[m], n) for m, found in names.items() if m in sys.modules for n in found)


@contextmanager
def _typed_errors() -> Iterator[None]:
    """The library's errors as the API's: input problems vs. infrastructure problems."""
    try:
        yield
    except (JobSpecError, ManifestError, ModelLoadError, ChangedRecordsError, CorruptIndexError,
            UnsupportedUriError) as e:  # fmt: skip
        raise InvalidInputError(str(e)) from None
    except (LeaseHeldError, LeaseLostError, *_pipeline_infrastructure_errors()) as e:
        raise InfrastructureError(str(e)) from None
    except RunError:
        raise
    except Exception as e:  # noqa: BLE001 - storage, cluster and runtime failures of every library
        raise InfrastructureError(one_line(e)) from e


# "NotADirectoryError: [Errno 20] ..." as a remote traceback prints it, the exception's dotted type first.
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit)): (.+)$")


def one_line(error: BaseException) -> str:
    """An error as one line a log can hold: the original exception that Ray or a library wrapped.

    Ray Data passes a worker's exception to the driver only as text (a remote traceback inside a
    `RayTaskError`), so the first exception line of that text that is not Ray's own is the cause.
    """
    chain = [error]
    while len(chain) < 20:
        inner = getattr(chain[-1], "cause", None) or chain[-1].__cause__
        if not isinstance(inner, BaseException) or inner in chain:
            break
        chain.append(inner)
    for candidate in chain:
        for line in str(candidate).splitlines():
            found = _EXCEPTION_LINE.match(line.strip())
            if found and not found.group(1).startswith("ray."):
                return f"{found.group(1).rsplit('.', 1)[-1]}: {found.group(2)}"[:500]
    innermost = chain[-1]
    lines = [line.strip() for line in str(innermost).splitlines() if line.strip()]
    return f"{type(innermost).__name__}: {lines[0] if lines else '(no message)'}"[:500]


def resolve(
    job: str | Path | JobSpec,
    *,
    manifest: str | None = None,
    output: str | None = None,
    overrides: list[str] | None = None,
) -> JobSpec:
    """A validated job spec from a YAML path (with overrides) or an existing `JobSpec`."""
    if isinstance(job, JobSpec):
        if overrides:
            raise InvalidInputError("overrides apply to a job YAML; change the JobSpec instead")
        update = {k: v for k, v in (("manifest", manifest), ("output", output)) if v is not None}
        return job.model_copy(update=update)
    try:
        return load_job_spec(job, overrides=overrides, manifest=manifest, output=output)
    except JobSpecError as e:
        raise InvalidInputError(str(e)) from None


def plan(job: str | Path | JobSpec, *, calibrate: bool = False, **kwargs) -> dict[str, object]:
    """The pre-flight: validates everything a run would, writes nothing, and estimates the run's
    time from the throughput table, or with `calibrate` from a short generation on this machine."""
    spec = resolve(job, **kwargs)  # a typo in the spec or a --set is reported before the model stack imports
    from diffgen.pipelines.plan import plan as make_plan

    with _typed_errors():
        made = make_plan(spec, check_images=True)
        estimated = estimate(spec, made.todo, calibrate_with=made.records if calibrate else None)
        holder = read_lease_holder(made.output)
    lease = None if holder is None or holder.is_stale() else holder.describe()
    return {**made.describe(), "leased_by": lease, "estimate": estimated}


def estimate(spec: JobSpec, todo: pa.Table, *, calibrate_with: pa.Table | None = None) -> dict[str, object]:
    """The plan's estimate for the records in `todo`; `calibrate_with` records time a short run here first."""
    from diffgen.generation import throughput

    table = throughput.load_table()
    measured = None
    if calibrate_with is not None:
        _offline_env()
        try:
            measured = throughput.calibrate(spec, calibrate_with)
        except throughput.CalibrationError as e:
            return {"available": False, "message": f"no estimate: calibration failed: {e}"}
        table = [measured, *table]
    result = throughput.estimate(spec, todo, table)
    return result if measured is None else {**result, "calibration": measured.to_dict()}


def run(job: str | Path | JobSpec, **kwargs) -> RunResult:
    """Run a job to the end on the cluster named by RAY_ADDRESS (or a local one)."""
    spec = resolve(job, **kwargs)  # a typo in the spec or a --set is reported before the model stack imports
    _offline_env()
    from diffgen.pipelines.generate import run as run_pipeline

    with _typed_errors():
        summary = run_pipeline(spec)
    if summary.status == "failed":
        raise RunFailedError(summary)
    return RunResult(summary)


def qc(output: str, *, job: str | Path | None = None, overrides: list[str] | None = None) -> QcReport:
    """Score an existing output again and rewrite its qc/report.json and .html; the index is unchanged.

    Settings: the output's own run.json `job.qc`, or `job`'s qc section, then `qc.*` overrides.
    """
    _offline_env()
    from diffgen.jobs.qc import rescore

    with _typed_errors():
        return rescore(output, job=None if job is None else str(job), overrides=overrides)


def open_output(output: str) -> Output:
    """An output wherever it lives now (copied, synced, mounted): its index with every written image's `image_uri`
    under `output`, and its images. Raises `InvalidInputError` when `output` holds no diffgen index.

        out = open_output("/data/copied-run")
        out.written.to_pandas()            # the dataset's rows, labels included
        out.read_image(record_id)          # a PIL image
    """
    from diffgen.dataset.output import NotAnOutputError
    from diffgen.dataset.output import open_output as open_at

    try:
        return open_at(output)
    except NotAnOutputError as e:
        raise InvalidInputError(str(e)) from None


def utility(
    output: str, *, real: str | None = None, label_column: str | None = None, job: str | Path | None = None,
    overrides: list[str] | None = None,
) -> UtilityReport:  # fmt: skip
    """Train on the output's synthetic images, test on a labelled real set: writes qc/utility.json (and its
    section of qc/report.html). Settings: the output's `job.qc` (or `job`'s), `real`, `label_column`, then
    `qc.utility.*` overrides. A real set that cannot give a score raises `InvalidInputError` before any work."""
    _offline_env()
    from diffgen.jobs.utility import score

    with _typed_errors():
        return score(output, real=real, label_column=label_column, job=None if job is None else str(job),
                     overrides=overrides)  # fmt: skip


def sweep(job: str | Path, grid: list[str] | dict[str, list], **kwargs) -> SweepReport:
    """Run `job` at every point of `grid` (`["sampler.guidance_scale=1.5,3", ...]` or {key: [values]}) and
    score each: writes sweep.json and sweep.html. `kwargs`: manifest, output, overrides, real, label_column."""
    _offline_env()
    from diffgen.pipelines.sweep import run_sweep
    from diffgen.reporting.sweep import parse_grid

    with _typed_errors():
        parsed = grid if isinstance(grid, dict) else parse_grid(grid)
        return run_sweep(job, parsed, **kwargs)
