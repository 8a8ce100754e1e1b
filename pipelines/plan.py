"""Everything a run decides before any model loads: validated input, records, what is left to do.

`plan` is shared by `diffgen run`, `diffgen validate` and `--dry-run`, so what the
pre-flight prints is what the run then does. The run saves the manifest suite's result
(`write_validation`) and, after compaction, the index suite's (`write_index_validation`)
under OUTPUT/qc/expectations/.
"""

from __future__ import annotations

import hashlib
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from diffgen import storage
from diffgen.c2pa_signing import C2paConfigError, C2paCredentials, load_credentials
from diffgen.expectations import Failure, SuiteResult, validate_index, validate_manifest_table, write_result
from diffgen.index import INDEX_DIR, REJECTS_DIR, committed_ids
from diffgen.loading import preflight
from diffgen.records import expand
from schemas.job import JobSpec, JobSpecError
from schemas.manifest import ManifestError, check_rows, describe_row_problems
from schemas.record import INDEX_SCHEMA

log = logging.getLogger(__name__)


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
    manifest_validation: SuiteResult | None = None  # the manifest suite's result, saved with the run

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
            "manifest_expectations": None if self.manifest_validation is None else self.manifest_validation.summary(),
        }


def _owed(n: object, cap: int) -> int:
    return n if isinstance(n, int) and 1 <= n <= cap else 1


def _listed(source: str, suite: SuiteResult, failures: tuple[Failure, ...]) -> str:
    head = f"{source}: manifest failed {len(failures)} of {suite.evaluated} expectation(s):"
    return "\n".join([head, *(f"  - {f.line}" for f in failures)])


def check_manifest(manifest: pa.Table, spec: JobSpec, source: str) -> tuple[SuiteResult, dict[int, list[str]]]:
    """The manifest suite's result and `check_rows`' problems per row; raises `ManifestError` when the run must stop.

    The suite and `policy.invalid_rows` agree on what stops a run:

    - a table-level failure (a required column missing, no rows) always stops it, with the
      failed expectations listed beside `check_rows`' own message;
    - "fail": any failed expectation stops it, listed with the first offending rows;
    - "skip": row-level failures (nulls, out-of-range values, repeated ids) are the rows
      `check_rows` sends to rejects/; the result records them and the run goes on.

    Rows that break no expectation but a rule the suite does not restate (one across
    fields) are `check_rows`' alone and follow the policy as before.
    """
    cap = spec.policy.max_images_per_row
    suite = validate_manifest_table(manifest, max_images_per_row=cap)
    fatal = suite.failures if spec.policy.invalid_rows == "fail" else suite.table_failures
    listed = [_listed(source, suite, fatal)] if fatal else []
    try:
        bad = check_rows(manifest, source, max_images_per_row=cap)
    except ManifestError as e:  # the manifest as a whole: no policy skips past it
        raise ManifestError("\n".join([str(e), *listed])) from None
    if listed or (bad and spec.policy.invalid_rows == "fail"):
        rows = [describe_row_problems(manifest, source, bad)] if bad else []
        raise ManifestError("\n".join(listed + rows))
    return suite, bad


def _split_invalid(
    manifest: pa.Table, spec: JobSpec, bad: dict[int, list[str]]
) -> tuple[pa.Table, pa.Table | None, int]:
    """Valid rows, the skipped rows with `row_index` and `error`, and the images they owed."""
    if not bad:
        return manifest, None, 0
    cap = spec.policy.max_images_per_row
    rows = sorted(bad)
    rejects = manifest.take(pa.array(rows, pa.int64()))
    rejects = rejects.append_column("row_index", pa.array(rows, pa.int64()))
    rejects = rejects.append_column("error", pa.array(["; ".join(bad[i]) for i in rows], pa.string()))
    valid = manifest.filter(pa.array([i not in bad for i in range(manifest.num_rows)]))
    if "num_images" not in manifest.column_names:
        return valid, rejects, len(rows)
    counts = manifest.column("num_images").to_pylist()
    return valid, rejects, sum(_owed(counts[i], cap) for i in rows)


def check_output(manifest_uri: str, output: str, spec: JobSpec | None = None) -> None:
    """The output may not lie inside (or hold) the manifest or the QC reference set: a run never
    writes where its inputs are read, and a reference never grows the run's own images."""
    inputs = {"the manifest's location": manifest_uri}
    if spec is not None:
        inputs["qc.reference"] = spec.qc.reference
        inputs["qc.reference_stats"] = spec.qc.reference_stats
    for name, uri in inputs.items():
        if uri is not None and storage.overlaps(output, uri):
            raise JobSpecError(f"output: {output} overlaps {name} {uri}; write elsewhere")


def check_qc_inputs(spec: JobSpec) -> None:
    """The QC model, weights and reference a run would read exist, before any actor starts."""
    if not spec.qc.enabled:
        return
    uris = {name: getattr(spec.qc, name) for name in ("clip_model", "fid_weights", "reference", "reference_stats")}
    missing = [f"qc.{name}: {uri} does not exist" for name, uri in uris.items() if uri and not storage.exists(uri)]
    if missing:
        raise JobSpecError("; ".join(missing))


def check_input_images(records: pa.Table, spec: JobSpec, *, threads: int = 16) -> None:
    """Every distinct init, mask and control image the records name exists (the pre-flight's check;
    a run itself rejects a row whose image is missing, with the reason, and goes on)."""
    columns = ["init_image", "mask_image", *spec.control_columns().values()]
    first_row: dict[str, str] = {}
    for column in (c for c in columns if c in records.column_names):
        for uri, rid in zip(records.column(column).to_pylist(), records.column("id").to_pylist()):
            if uri:
                first_row.setdefault(uri, rid)
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(storage.exists, first_row))
    missing = [(uri, rid) for (uri, rid), ok in zip(first_row.items(), found) if not ok]
    if missing:
        listed = "; ".join(f"{uri} (row id={rid!r})" for uri, rid in missing[:10])
        raise ManifestError(f"{len(missing)} of {len(first_row)} input image(s) not found: {listed}")


def plan(spec: JobSpec, *, probe_output: bool = True, check_images: bool = False) -> Plan:
    """Validate the job, the model folder, the manifest and the output; work out the records to make.

    The manifest suite runs right after reading, before the model folder is looked at; what
    stops the run under each `policy.invalid_rows` is set out in `check_manifest`. With
    `check_images` (the pre-flight), every input image the records name must exist.
    """
    manifest_uri, output = spec.require_io()
    check_output(manifest_uri, output, spec)
    try:
        manifest = storage.read_parquet(manifest_uri)
    except (OSError, pa.ArrowInvalid) as e:
        raise ManifestError(f"{manifest_uri}: cannot read the manifest as Parquet: {e}") from None
    validation, bad = check_manifest(manifest, spec, manifest_uri)
    valid, rejects, rejected_images = _split_invalid(manifest, spec, bad)
    # Cheap checks on the driver: a missing or foreign model folder fails here, not in an actor.
    preflight(spec)
    check_qc_inputs(spec)
    c2pa = spec.provenance.c2pa
    try:
        credentials = load_credentials(c2pa.cert_chain, c2pa.private_key) if c2pa else None
    except C2paConfigError as e:
        raise JobSpecError(f"provenance.c2pa: {e}") from None
    if probe_output:
        try:
            storage.probe_writable(output)
        except Exception as e:  # noqa: BLE001 - fsspec backends raise their own types; all mean "cannot write here"
            raise OutputError(f"output {output} is not writable: {type(e).__name__}: {e}") from None
    records = expand(valid, spec) if valid.num_rows else expand(manifest.slice(0, 0), spec)
    if check_images:
        check_input_images(records, spec)
    done = committed_ids(output)
    todo = records.filter(pc.invert(pc.is_in(records.column("record_id"), pa.array(sorted(done), pa.string()))))
    return Plan(spec, spec.run_id or "run", manifest_uri, output, manifest.num_rows, records, todo, rejects,
                rejected_images, credentials, validation)  # fmt: skip


def write_rejects(p: Plan) -> None:
    """The skipped rows, named by their content so a re-run rewrites the same file."""
    if p.rejects is None:
        return
    digest = hashlib.sha256(",".join(map(str, p.rejects.column("row_index").to_pylist())).encode()).hexdigest()[:20]
    storage.write_parquet(p.rejects, storage.join(p.output, REJECTS_DIR, f"part-{digest}.parquet"))


def write_validation(p: Plan) -> None:
    """The manifest suite's result as OUTPUT/qc/expectations/manifest.json (a re-run overwrites it)."""
    if p.manifest_validation is not None:
        write_result(p.output, p.manifest_validation)


def write_index_validation(p: Plan, index: pa.Table | None) -> SuiteResult:
    """Validate the compacted index against the plan's records; save it as OUTPUT/qc/expectations/index.json.

    A failure is recorded and logged, not raised: the images are written by now, and the
    run's counts already say what was lost.
    """
    table = index if index is not None else INDEX_SCHEMA.empty_table()
    result = validate_index(table, p.records.column("record_id").to_pylist())
    write_result(p.output, result)
    if not result.success:
        log.warning("index failed %d expectation(s):\n%s", len(result.failures),
                    "\n".join(f"  - {f.line}" for f in result.failures))  # fmt: skip
    return result


__all__ = [
    "INDEX_DIR",
    "OutputError",
    "Plan",
    "check_manifest",
    "check_output",
    "plan",
    "write_index_validation",
    "write_rejects",
    "write_validation",
]
