"""Everything a run decides before any model loads: validated input, records, what is left to do.

`plan` is shared by `diffgen run`, `diffgen validate` and `--dry-run`, so what the
pre-flight prints is what the run then does.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from diffgen import storage
from diffgen.c2pa_signing import C2paConfigError, C2paCredentials, load_credentials
from diffgen.index import INDEX_DIR, REJECTS_DIR, committed_ids
from diffgen.loading import preflight
from diffgen.records import expand
from schemas.job import JobSpec, JobSpecError
from schemas.manifest import ManifestError, check_rows, describe_row_problems


class OutputError(RuntimeError):
    """The output location cannot be written (missing bucket, bad credentials, unreachable endpoint)."""


@dataclass(frozen=True)
class Plan:
    spec: JobSpec
    run_id: str
    manifest_uri: str
    output: str
    manifest_rows: int
    records: pa.Table  # one row per expected image of the valid rows
    todo: pa.Table  # records not yet committed in the output's index
    rejects: pa.Table | None  # invalid rows skipped by policy, with `row_index` and `error`
    rejected_images: int  # images the rejected rows owed
    credentials: C2paCredentials | None = None  # checked C2PA chain and key, when the job signs

    @property
    def images_expected(self) -> int:
        return self.records.num_rows + self.rejected_images

    @property
    def batches(self) -> int:
        return math.ceil(self.todo.num_rows / self.spec.compute.batch_size)

    def describe(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "manifest": self.manifest_uri,
            "output": self.output,
            "manifest_rows": self.manifest_rows,
            "invalid_rows": 0 if self.rejects is None else self.rejects.num_rows,
            "images_expected": self.images_expected,
            "already_committed": self.records.num_rows - self.todo.num_rows,
            "images_to_generate": self.todo.num_rows,
            "batches": self.batches,
            "actors": self.spec.compute.num_actors,
            "gpus_per_actor": self.spec.compute.gpus_per_actor,
        }


def _owed(n: object, cap: int) -> int:
    return n if isinstance(n, int) and 1 <= n <= cap else 1


def _split_invalid(manifest: pa.Table, spec: JobSpec, source: str) -> tuple[pa.Table, pa.Table | None, int]:
    cap = spec.policy.max_images_per_row
    bad = check_rows(manifest, source, max_images_per_row=cap)
    if not bad:
        return manifest, None, 0
    if spec.policy.invalid_rows == "fail":
        raise ManifestError(describe_row_problems(manifest, source, bad))
    rows = sorted(bad)
    rejects = manifest.take(pa.array(rows, pa.int64()))
    rejects = rejects.append_column("row_index", pa.array(rows, pa.int64()))
    rejects = rejects.append_column("error", pa.array(["; ".join(bad[i]) for i in rows], pa.string()))
    valid = manifest.filter(pa.array([i not in bad for i in range(manifest.num_rows)]))
    counts = manifest.column("num_images").to_pylist() if "num_images" in manifest.column_names else [1] * len(rows)
    return valid, rejects, sum(_owed(counts[i], cap) for i in rows)


def check_output(manifest_uri: str, output: str) -> None:
    if storage.overlaps(output, manifest_uri):
        raise JobSpecError(f"output: {output} overlaps the manifest's location {manifest_uri}; write elsewhere")


def plan(spec: JobSpec, *, probe_output: bool = True) -> Plan:
    """Validate the job, the model folder, the manifest and the output; work out the records to make."""
    manifest_uri, output = spec.require_io()
    check_output(manifest_uri, output)
    try:
        manifest = storage.read_parquet(manifest_uri)
    except (OSError, pa.ArrowInvalid) as e:
        raise ManifestError(f"{manifest_uri}: cannot read the manifest as Parquet: {e}") from None
    valid, rejects, rejected_images = _split_invalid(manifest, spec, manifest_uri)
    # Cheap checks on the driver: a missing or foreign model folder fails here, not in an actor.
    preflight(spec)
    c2pa = spec.provenance.c2pa
    try:
        credentials = load_credentials(c2pa.cert_chain, c2pa.private_key) if c2pa else None
    except C2paConfigError as e:
        raise JobSpecError(f"provenance.c2pa: {e}") from None
    if probe_output:
        try:
            storage.probe_writable(output)
        except Exception as e:  # fsspec backends raise their own types; all mean "cannot write here"
            raise OutputError(f"output {output} is not writable: {type(e).__name__}: {e}") from None
    records = expand(valid, spec) if valid.num_rows else expand(manifest.slice(0, 0), spec)
    done = committed_ids(output)
    todo = records.filter(pc.invert(pc.is_in(records.column("record_id"), pa.array(sorted(done), pa.string()))))
    return Plan(spec, spec.run_id or "run", manifest_uri, output, manifest.num_rows, records, todo, rejects,
                rejected_images, credentials)  # fmt: skip


def write_rejects(p: Plan) -> None:
    """The skipped rows, named by their content so a re-run rewrites the same file."""
    if p.rejects is None:
        return
    digest = hashlib.sha256(",".join(map(str, p.rejects.column("row_index").to_pylist())).encode()).hexdigest()[:20]
    storage.write_parquet(p.rejects, storage.join(p.output, REJECTS_DIR, f"part-{digest}.parquet"))


__all__ = ["INDEX_DIR", "OutputError", "Plan", "check_output", "plan", "write_rejects"]
