"""`diffgen submit`: send a run to a Ray cluster through Ray's Job API, and with `--wait` follow it.

The cluster runs `python -m diffgen.jobs.generate JOB --manifest URI --output URI` as a Ray job; what
travels with it depends on the mode:

- upload (the default): the job spec, validated and resolved here (`--set` applied, relative paths
  made absolute against the YAML's folder), is written to a staging folder that becomes the job's
  `working_dir`, with the manifest when it is a local file; the code comes from this checkout
  (one `diffgen` package assembled as the wheel lays it out, as `py_modules`), so the cluster runs what was
  validated here. Every other local path (model, LoRA, C2PA key, input images, a local output) is
  read on the cluster at the same absolute path: keep models on a store mounted alike everywhere
  and data on object storage.
- `--image URI` (runtime_env `image_uri`, which Ray lets carry nothing else) or `--no-upload`: the
  code is the cluster's own and nothing is uploaded; the command line is passed through as given,
  so the job file and every path must be readable on the cluster (e.g. a mounted ConfigMap).

With `--wait` the exit code is the run's own: Ray records the entrypoint's exit status
(`JobDetails.driver_exit_code`), so 0-4 come back exactly, without parsing logs (which may be cut)
or reading `run.json` (which an invalid-input run never writes, and which may sit on storage the
submitter cannot read). A job that never ran its entrypoint, or was stopped, exits 1.

A `--submission-id` that already names a job does not start a second run: the same submission
(same fingerprint in the job's metadata) is followed as if just submitted; a different one is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import yaml

from diffgen.jobs import api
from diffgen.schemas.job import CONTROL_COLUMN, JobSpec, JobSpecError

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
# The checkout's folders that make up the installed `diffgen` package (pyproject.toml's package-dir):
# the engine is the package itself, the others its subpackages.
CODE_PACKAGES = {"diffgen": "", "schemas": "schemas", "pipelines": "pipelines", "jobs": "jobs"}
# Ray also honours each folder's .gitignore (.venv, out/, examples/models, caches).
EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".hypothesis"]
_IMAGE_COLUMNS = ("init_image", "mask_image")
_FINGERPRINT = "diffgen_fingerprint"


class SubmitError(api.RunError):
    """The cluster could not be reached or refused the job."""

    exit_code = api.EXIT_INFRA


@dataclass(frozen=True)
class Submission:
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    staging: Path | None = field(default=None, compare=False)  # deleted once uploaded


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _check_no_relative_images(manifest: Path) -> None:
    """Relative image paths resolve against the manifest's folder, which is not uploaded with it."""
    names = pq.read_schema(manifest).names
    columns = [c for c in names if c in _IMAGE_COLUMNS or c.startswith(CONTROL_COLUMN)]
    if not columns:
        return
    table = pq.read_table(manifest, columns=columns)
    for column in columns:
        for value in table.column(column).to_pylist():
            if value and "://" not in value and not os.path.isabs(value):
                raise api.InvalidInputError(
                    f"{manifest}: {column} names {value!r} relative to the manifest's folder, which submit does "
                    "not upload; put the manifest and its images on storage the cluster reads and pass that URI "
                    "(or use --no-upload on a cluster that sees this folder)"
                )


def _fingerprint(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _staged(spec: JobSpec, job: Path, verbose: bool) -> Submission:
    """The resolved job spec (and a local manifest) in a staging folder, the code as py_modules."""
    manifest, output = spec.require_io()
    root = Path(tempfile.mkdtemp(prefix="diffgen-submit-"))
    staging = root / "job"
    staging.mkdir()
    try:
        name = job.name if job.suffix in (".yaml", ".yml") else f"{job.name}.yaml"
        data = spec.model_dump(mode="json", exclude_unset=True, exclude={"manifest", "output"})
        data["run_id"] = spec.run_id
        manifest_digest = b""
        if _is_local(manifest):
            local = _local_path(manifest)
            if not local.is_file():
                raise api.InvalidInputError(f"manifest: {local} is not a file")
            _check_no_relative_images(local)
            # The cluster reads the shipped copy (a path inside Ray's package); run.json and provenance name this.
            data["manifest_source"] = spec.manifest_source or manifest
            manifest = local.name if local.name != name else f"manifest-{local.name}"
            shutil.copyfile(local, staging / manifest)  # relative: the job's working_dir on the cluster
            with local.open("rb") as f:
                manifest_digest = hashlib.file_digest(f, "sha256").digest()
        text = yaml.safe_dump(data, sort_keys=False)
        (staging / name).write_text(text)
        argv = ["python", "-m", "diffgen.jobs.generate", name, "--manifest", manifest, "--output", output]
        entrypoint = shlex.join(argv + (["-v"] if verbose else []))
        runtime_env = {"working_dir": str(staging), "py_modules": [str(stage_code(root / "code"))],
                       "excludes": EXCLUDES}  # fmt: skip
        fingerprint = _fingerprint(entrypoint, text, manifest_digest)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Submission(entrypoint, runtime_env, _metadata(spec, fingerprint), root)


def stage_code(folder: Path) -> Path:
    """This checkout's code as the one `diffgen` package the cluster imports (`folder`/diffgen): the engine,
    with `schemas/`, `pipelines/` and `jobs/` as its subpackages, as the wheel lays them out."""
    import diffgen

    target = folder / "diffgen"
    ignore = shutil.ignore_patterns(*EXCLUDES)
    if not all((ROOT / source / "__init__.py").is_file() for source in CODE_PACKAGES):  # an installed wheel
        shutil.copytree(Path(diffgen.__file__).parent, target, ignore=ignore)
        return target
    for source, inside in CODE_PACKAGES.items():
        shutil.copytree(ROOT / source, target / inside if inside else target, ignore=ignore, dirs_exist_ok=True)
    return target


def _metadata(spec: JobSpec, fingerprint: str) -> dict[str, str]:
    return {"diffgen_run_id": spec.run_id or "run", "diffgen_output": spec.output or "", _FINGERPRINT: fingerprint}


def prepare(
    job: str | Path,
    *,
    manifest: str | None = None,
    output: str | None = None,
    overrides: list[str] | None = None,
    image: str | None = None,
    upload: bool = True,
    verbose: bool = False,
) -> Submission:
    """Validate the job spec here (a typo fails in a second, before the cluster is touched) and
    build what Ray is sent. Raises `InvalidInputError`."""
    job = Path(job)
    if image is None and upload:
        spec = api.resolve(job, manifest=manifest, output=output, overrides=overrides)
        try:
            return _staged(spec, job, verbose)
        except JobSpecError as e:
            raise api.InvalidInputError(str(e)) from None
    # The cluster reads the job file itself: check it here when this machine can, pass it on as given.
    if job.exists():
        spec = api.resolve(job, manifest=manifest, output=output, overrides=overrides)
    else:
        log.info("%s is not readable here; the cluster validates it", job)
        spec = None
    argv = ["python", "-m", "diffgen.jobs.generate", str(job)]
    argv += [a for flag, v in (("--manifest", manifest), ("--output", output)) if v for a in (flag, v)]
    argv += [a for item in overrides or [] for a in ("--set", item)]
    entrypoint = shlex.join(argv + (["-v"] if verbose else []))
    runtime_env = {"image_uri": image} if image else {}
    fingerprint = _fingerprint(entrypoint, image or "")
    metadata = _metadata(spec, fingerprint) if spec else {_FINGERPRINT: fingerprint}
    return Submission(entrypoint, runtime_env, metadata)


def connect(address: str) -> JobSubmissionClient:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SubmitError(f"cannot reach the Ray job server at {address}: {e}") from None


def _existing(client: JobSubmissionClient, submission_id: str) -> JobDetails | None:
    try:
        return client.get_job_info(submission_id)
    except RuntimeError as e:
        if "status code 404" in str(e):
            return None
        raise SubmitError(f"cannot look up job {submission_id}: {e}") from None


def _attach(existing: JobDetails, submission: Submission) -> str:
    sid = existing.submission_id or existing.job_id
    if (existing.metadata or {}).get(_FINGERPRINT) != submission.metadata[_FINGERPRINT]:
        raise api.InvalidInputError(
            f"submission id {sid} already names a different job ({existing.entrypoint!r}, {existing.status}); "
            "pick a new --submission-id"
        )
    log.info("submission id %s already submitted (%s); following it instead of starting another run", sid,
             existing.status)  # fmt: skip
    return sid


def submit(
    client: JobSubmissionClient, submission: Submission, submission_id: str | None = None, *, agent_wait_s: float = 60
) -> str:
    """Submit, or find the same submission already there under `submission_id`; returns the job id.

    A head that has just started may have no job agent registered yet ("No available agent"):
    nothing was queued then, so the submission is retried for up to `agent_wait_s`.
    """
    if submission_id and (existing := _existing(client, submission_id)):
        return _attach(existing, submission)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(
                entrypoint=submission.entrypoint,
                runtime_env=submission.runtime_env,
                metadata=submission.metadata,
                submission_id=submission_id,
            )
        except (RuntimeError, ValueError, ConnectionError) as e:
            if "No available agent" in str(e) and time.monotonic() < deadline:
                log.info("the head has no job agent yet; retrying")
                time.sleep(2)
                continue
            # Two submitters racing on one id: the loser follows the winner.
            if submission_id and (existing := _existing(client, submission_id)):
                return _attach(existing, submission)
            raise SubmitError(f"the Ray job server refused the job: {e}") from None


async def _stream_logs(client: JobSubmissionClient, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        sys.stdout.write(lines)
        sys.stdout.flush()


def exit_code(info: JobDetails) -> int:
    """The run's exit code from the Ray job's end state; 1 when the entrypoint never gave one."""
    from ray.job_submission import JobStatus

    if info.status == JobStatus.SUCCEEDED:
        return api.EXIT_OK
    code = info.driver_exit_code
    if info.status == JobStatus.FAILED and code in (api.EXIT_INFRA, api.EXIT_INVALID, api.EXIT_PARTIAL,
                                                    api.EXIT_FAILED):  # fmt: skip
        return code
    log.error("Ray job %s ended %s (entrypoint exit code %s): %s", info.submission_id, info.status, code, info.message)
    return api.EXIT_INFRA


def wait(client: JobSubmissionClient, job_id: str, poll_s: float = 1.0) -> int:
    """Stream the job's logs to stdout until it ends; return its exit code."""
    import aiohttp

    try:
        asyncio.run(_stream_logs(client, job_id))
    except (OSError, RuntimeError, aiohttp.ClientError) as e:  # not the run's failure: its status decides
        log.warning("log stream of %s ended early (%s); polling its status", job_id, e)
    try:
        while not (info := client.get_job_info(job_id)).status.is_terminal():
            time.sleep(poll_s)
    except (OSError, RuntimeError) as e:
        raise SubmitError(
            f"lost the Ray job server while waiting for {job_id} (`ray job status {job_id}`): {e}"
        ) from None
    return exit_code(info)


@contextmanager
def staged(submission: Submission) -> Iterator[Submission]:
    """The submission, its staging folder removed afterwards (Ray has uploaded it by then)."""
    try:
        yield submission
    finally:
        if submission.staging is not None:
            shutil.rmtree(submission.staging, ignore_errors=True)
