"""`diffgen sweep`: run a job at every point of a grid of settings, in one Ray session, and score each.

1. the grid: one job spec per point (the job file, its overrides, the point's settings), each writing
   to its own prefix of the sweep's output, with QC on (and `qc.utility` when a real set is given)
2. run each point in turn on the one cluster (`diffgen.pipelines.generate.run`); a point whose run.json
   is already complete or partial for exactly these settings is not run again, so a stopped sweep resumes
   (a point stopped half-way resumes its own run: committed images are kept)
3. read each point's scores back from its output and write sweep.json and sweep.html
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diffgen.dataset import storage
from diffgen.dataset.layout import RUN_FILE, sweep_point
from diffgen.pipelines.cluster import connect
from diffgen.pipelines.generate import run as run_job
from diffgen.reporting.sweep import build_sweep, grid_points, point_metrics, point_name, write_sweep
from diffgen.schemas.job import JobSpec, JobSpecError, load_job_spec
from diffgen.schemas.sweep import SweepPoint, SweepReport

log = logging.getLogger(__name__)


def point_specs(
    job: str | Path, grid: dict[str, list[Any]], *, output: str | None = None, manifest: str | None = None,
    overrides: list[str] | None = None, real: str | None = None, label_column: str | None = None,
) -> tuple[str, list[tuple[str, dict[str, Any], JobSpec]]]:  # fmt: skip
    """The sweep's output and (name, settings, job spec) of every point, all validated before anything runs."""
    base = [*(overrides or []), "qc.enabled=true"]
    if real is not None:  # given on the command line: relative to the working directory, not the job file
        base += [f"qc.utility.real={real if '://' in real else Path(real).resolve()}"]
    if label_column is not None:
        base += [f"qc.utility.label_column={label_column}"]
    first = load_job_spec(job, overrides=base, manifest=manifest, output=output)
    if first.output is None:
        raise JobSpecError("output: a sweep needs --output (or the job's output), the folder of its points")
    stem = first.run_id or "sweep"
    points, seen = [], set()
    for settings in grid_points(grid):
        name = point_name(settings)
        if name in seen:
            raise JobSpecError(f"--grid: two points would share the folder {name}; use values that differ as text")
        seen.add(name)
        point_overrides = [*base, *(f"{k}={v}" for k, v in settings.items()), f"run_id={stem}-{name}"[:128]]
        spec = load_job_spec(job, overrides=point_overrides, manifest=manifest,
                             output=storage.join(first.output, sweep_point(name)))  # fmt: skip
        points.append((name, settings, spec))
    return first.output, points


def _already_done(spec: JobSpec) -> bool:
    uri = storage.join(spec.output, RUN_FILE)
    if not storage.exists(uri):
        return False
    run = json.loads(storage.read_bytes(uri))
    return run.get("status") in ("complete", "partial") and run.get("job") == spec.model_dump(mode="json")


def run_sweep(job: str | Path, grid: dict[str, list[Any]], **kwargs) -> SweepReport:
    """Steps 1-3; `kwargs` as `point_specs` takes them."""
    sweep_output, points = point_specs(job, grid, **kwargs)
    connect()
    done = []
    for k, (name, settings, spec) in enumerate(points):
        resumed = _already_done(spec)
        if resumed:
            log.info("sweep point %d/%d %s: already complete, scores read back", k + 1, len(points), name)
        else:
            log.info("sweep point %d/%d %s: %s", k + 1, len(points), name, settings)
            run_job(spec)
        status = json.loads(storage.read_bytes(storage.join(spec.output, RUN_FILE))).get("status")
        done.append(SweepPoint(name=name, settings=settings, output=spec.output, status=status, resumed=resumed,
                               metrics=point_metrics(spec.output)))  # fmt: skip
    report = build_sweep(str(job), sweep_output, grid, done, created_at=datetime.now(UTC))
    return write_sweep(report)
