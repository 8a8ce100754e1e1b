"""Everything a run decides before any model loads: validated input, records, what is left to do.

`plan` is shared by `diffgen run`, `diffgen validate` and `--dry-run`, so what the
pre-flight prints is what the run then does. The run saves the manifest suite's result
(`write_validation`) and, after compaction, the index suite's (`write_index_validation`)
under OUTPUT/qc/expectations/.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from diffgen.dataset import storage
from diffgen.dataset.fingerprint import fingerprinted, input_columns, job_fingerprint, job_inputs, refingerprinted
from diffgen.dataset.index import read_index
from diffgen.dataset.layout import rejects_file
from diffgen.dataset.records import expand
from diffgen.dataset.resume import READS as RESUME_READS
from diffgen.dataset.resume import Attempts, ResumeState, resume_state
from diffgen.generation.distilled import distilled_warnings
from diffgen.generation.loading import preflight
from diffgen.generation.textual_inversion import placeholder_warnings
from diffgen.metrics.reference import ReferenceSetError, check_reference
from diffgen.pipelines import resume_tasks
from diffgen.pipelines.resources import demands, shortfall, visible_nodes
from diffgen.provenance.c2pa import C2paConfigError, C2paCredentials, load_credentials
from diffgen.reporting.expectations import Failure, SuiteResult, validate_index, validate_manifest_table, write_result
from diffgen.reporting.utility import check_before_run as check_utility_inputs
from diffgen.schemas.job import IP_ADAPTER_COLUMN, JobSpec, JobSpecError
from diffgen.schemas.manifest import ManifestError, check_rows, describe_row_problems, with_plain_strings
from diffgen.schemas.record import INDEX_SCHEMA
from diffgen.stages.chain import check_chain
from diffgen.stages.generate import GenerateStage
from diffgen.stages.qc import QcStage
from diffgen.stages.write import WriteStage

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
    records: pa.Table  # one row per expected image (slot, attempt 0) of the valid rows, with its fingerprint
    todo: pa.Table  # the attempt of each unsettled slot to make now
    rejects: pa.Table | None  # invalid rows skipped by policy, with `row_index` and `error`
    rejected_images: int  # images the rejected rows owed
    credentials: C2paCredentials | None = None  # checked C2PA chain and key, when the job signs
    manifest_validation: SuiteResult | None = None  # the manifest suite's result, saved with the run
    changed: int = 0  # committed records made from other inputs, made again (policy.changed_records: overwrite)
    job: dict = field(default_factory=dict)  # the job's generation inputs (diffgen.dataset.fingerprint.job_inputs)
    expected: dict[str, str] = field(default_factory=dict)  # record id -> fingerprint of every attempt in the chains
    warnings: tuple[str, ...] = ()  # a distilled model off its recipe; prompt placeholders no embedding loads

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
            "already_committed": self.records.num_rows - len(set(self.todo.column("slot_id").to_pylist())),
            "changed_records": self.changed,
            "images_to_generate": self.todo.num_rows,
            "batches": self.batches,
            "actors": self.spec.compute.num_actors,
            "gpus_per_actor": self.spec.compute.gpus_per_actor,
            "manifest_expectations": None if self.manifest_validation is None else self.manifest_validation.summary(),
            "warnings": list(self.warnings),
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
    if spec.qc.reference:
        try:
            check_reference(spec.qc.reference, spec.qc.reference_image_column)
        except ReferenceSetError as e:
            raise JobSpecError(f"qc.reference: {e}") from None


class InputUnreachableError(RuntimeError):
    """An input image's store could not be reached during the pre-flight (an outage, not a bad manifest)."""


def _input_uris(records: pa.Table, spec: JobSpec) -> dict[str, str]:
    """Every distinct init, mask and control image URI the records name -> the first row id naming it."""
    columns = ["init_image", "mask_image", *spec.control_columns().values(), IP_ADAPTER_COLUMN]
    first_row: dict[str, str] = {}
    for column in (c for c in columns if c in records.column_names):
        for uri, rid in zip(records.column(column).to_pylist(), records.column("id").to_pylist()):
            if uri:
                first_row.setdefault(uri, rid)
    return first_row


def _listed_uris(problems: list[tuple[str, str, str]]) -> str:
    return "; ".join(f"{uri} (row id={rid!r}): {why}" for uri, rid, why in problems[:10])


def check_input_roots(records: pa.Table, spec: JobSpec) -> None:
    """With `policy.input_roots`, every input image lies inside one of them (resolved: '..', links)."""
    roots = spec.policy.input_roots
    if roots is None:
        return
    uris = _input_uris(records, spec)
    outside = [(uri, rid, "outside policy.input_roots") for uri, rid in uris.items() if not storage.under(uri, roots)]
    if outside:
        raise ManifestError(f"{len(outside)} of {len(uris)} input image(s) lie outside policy.input_roots "
                            f"({', '.join(roots)}): {_listed_uris(outside)}")  # fmt: skip


def _input_problem(uri: str, max_bytes: int) -> str | None:
    try:
        storage.check_input(uri, max_bytes)
    except FileNotFoundError:
        return "not found"
    except (storage.InputRefusedError, storage.UnsupportedUriError, PermissionError, IsADirectoryError) as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - connection errors of every fsspec backend
        raise InputUnreachableError(f"input images: cannot reach {uri}: {type(e).__name__}: {e}"[:500]) from None
    return None


def check_input_images(records: pa.Table, spec: JobSpec, *, threads: int = 16) -> None:
    """Every distinct init, mask and control image the records name is a regular file within
    `policy.max_input_bytes` (the pre-flight's check; a run itself rejects a row whose image is
    missing, with the reason, and goes on)."""
    uris = _input_uris(records, spec)
    limit = spec.policy.max_input_bytes
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda uri: _input_problem(uri, limit), uris))
    problems = [(uri, rid, why) for (uri, rid), why in zip(uris.items(), found) if why is not None]
    if problems:
        raise ManifestError(f"{len(problems)} of {len(uris)} input image(s) cannot be used: {_listed_uris(problems)}")


def check_resources(spec: JobSpec) -> None:
    """The cluster the run will use can hold its actors, where the pre-flight can see it
    (`diffgen.pipelines.resources`)."""
    nodes = visible_nodes()
    why = shortfall(demands(spec), nodes) if nodes is not None else None
    if why is not None:
        raise JobSpecError(f"{why}; lower compute.gpus_per_actor / cpus_per_actor / num_actors, "
                           "or use a larger cluster")  # fmt: skip


def check_columns(columns: list[str], spec: JobSpec) -> None:
    """Every manifest column a stage of this job reads exists (before any model loads)."""
    group = spec.qc.fid_group_by
    if spec.qc.enabled and group is not None and group not in columns:
        raise JobSpecError(f"qc.fid_group_by: the manifest has no column '{group}' (it has {', '.join(columns)})")
    split = spec.webdataset.split_by
    if spec.webdataset.enabled and split is not None and split not in columns:
        raise JobSpecError(f"webdataset.split_by: the manifest has no column '{split}' (it has {', '.join(columns)})")


def stage_chain(spec: JobSpec, output: str, run_id: str, credentials: C2paCredentials | None = None) -> list:
    """The run's stages in order (none loads anything when built)."""
    qc = [QcStage(spec.qc)] if spec.qc.enabled else []
    return [GenerateStage(spec), *qc, WriteStage(spec, output, run_id, credentials)]


def check_image_count(valid: pa.Table, spec: JobSpec, rejected_images: int) -> None:
    """The images the manifest asks for, in all, are within `policy.max_images` (before any is expanded)."""
    counts = valid.column("num_images") if "num_images" in valid.column_names else None
    asked = valid.num_rows if counts is None else pc.sum(pc.fill_null(counts, 1)).as_py() or 0
    total = asked + rejected_images
    if total > spec.policy.max_images:
        raise ManifestError(f"the manifest asks for {total} images, above policy.max_images={spec.policy.max_images}; "
                            "split it into several runs or raise the cap")  # fmt: skip


def plan(spec: JobSpec, *, probe_output: bool = True, check_images: bool = False) -> Plan:
    """Validate the job, the model folder, the manifest and the output; work out the records to make.

    The manifest suite runs right after reading, before the model folder is looked at; what
    stops the run under each `policy.invalid_rows` is set out in `check_manifest`. With
    `check_images` (the pre-flight), every input image the records name must exist.
    """
    manifest_uri, output = spec.require_io()
    check_output(manifest_uri, output, spec)
    try:
        manifest = with_plain_strings(storage.read_parquet(manifest_uri))
    except (OSError, pa.ArrowInvalid) as e:
        raise ManifestError(f"{manifest_uri}: cannot read the manifest as Parquet: {e}") from None
    validation, bad = check_manifest(manifest, spec, manifest_uri)
    valid, rejects, rejected_images = _split_invalid(manifest, spec, bad)
    # Cheap checks on the driver: a missing or foreign model folder fails here, not in an actor.
    preflight(spec)
    check_qc_inputs(spec)
    check_utility_inputs(spec.qc, manifest)
    check_resources(spec)
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
    check_columns(manifest.column_names, spec)
    check_image_count(valid, spec, rejected_images)
    records = expand(valid, spec) if valid.num_rows else expand(manifest.slice(0, 0), spec)
    check_input_roots(records, spec)
    if check_images:
        check_input_images(records, spec)
    # Only a prompt with a '<' can hold a `<token>`: the others are not looked at one by one.
    prompts = [p for c in ("prompt", "negative_prompt")
               for p in records.column(c).filter(pc.fill_null(pc.match_substring(records.column(c), "<"), False))
               .to_pylist()]  # fmt: skip
    warnings = (*distilled_warnings(spec, records.column("steps").to_pylist(),
                                    records.column("guidance_scale").to_pylist()),
                *placeholder_warnings(prompts, spec.textual_inversions))  # fmt: skip
    for warning in warnings:
        log.warning("%s", warning)
    job = job_inputs(spec)
    records = fingerprinted(records, spec, job)
    try:
        check_chain(records.column_names, stage_chain(spec, output, spec.run_id or "run"))
    except ValueError as e:
        raise JobSpecError(f"job spec: {e}") from None
    made = Plan(spec, spec.run_id or "run", manifest_uri, output, manifest.num_rows, records, records, rejects,
                rejected_images, credentials, validation, job=job, warnings=warnings)  # fmt: skip
    state = _resume(made, retry_failed=True)
    if state.changed and spec.policy.changed_records == "refuse":
        raise state.refusal(output)
    if state.changed:
        log.warning("%d committed record(s) were made from other inputs; making them again (policy.changed_records: "
                    "overwrite); first: %s", len(state.changed), state.changed[0].describe())  # fmt: skip
    return replace(made, todo=state.todo, expected=state.expected, changed=len(state.changed))


def _resume(p: Plan, *, retry_failed: bool) -> ResumeState:
    """The resume walk of the plan's slots through the output's index: in this process for a run of up to
    `TASK_SLOTS` slots, else in Ray tasks by slot bucket (`diffgen.pipelines.resume_tasks`)."""
    policy = p.spec.policy
    controls = list(p.spec.control_columns().values())
    attempts = Attempts(policy.replace_rejected, policy.max_attempts if policy.replace_rejected else 1, retry_failed)
    fingerprint = partial(refingerprinted, job_fp=job_fingerprint(p.job), control_columns=input_columns(p.spec))
    skip_corrupt = policy.corrupt_index == "quarantine"
    if p.records.num_rows > resume_tasks.TASK_SLOTS:
        return resume_tasks.resume_in_tasks(p.records, p.output, p.job, controls, fingerprint, attempts,
                                            skip_corrupt=skip_corrupt)  # fmt: skip
    index = read_index(p.output, skip_corrupt=skip_corrupt, columns=RESUME_READS)
    return resume_state(p.records, index, p.job, controls, fingerprint, attempts)


def next_round(p: Plan) -> Plan:
    """The plan after a round of generation: the replacement attempts its rejections and replaceable
    failures now need (a transient failure waits for the next run: retrying it now would meet the same
    outage). Changed inputs cannot appear mid-run: the run holds the output's lease."""
    state = _resume(p, retry_failed=False)
    return replace(p, todo=state.todo, expected=state.expected)


def write_rejects(p: Plan) -> None:
    """The skipped rows, named by their content so a re-run rewrites the same file."""
    if p.rejects is None:
        return
    storage.write_parquet(p.rejects, storage.join(p.output, rejects_file(p.rejects.column("row_index").to_pylist())))


def write_validation(p: Plan) -> None:
    """The manifest suite's result as OUTPUT/qc/expectations/manifest.json (a re-run overwrites it)."""
    if p.manifest_validation is not None:
        write_result(p.output, p.manifest_validation)


def write_index_validation(p: Plan, index: pa.Table | None) -> SuiteResult:
    """Validate the compacted index against the plan's attempts (one row each); save it as
    OUTPUT/qc/expectations/index.json.

    A failure is recorded and logged, not raised: the images are written by now, and the
    run's counts already say what was lost.
    """
    table = index if index is not None else INDEX_SCHEMA.empty_table()
    result = validate_index(table, p.expected or p.records.column("record_id").to_pylist())
    write_result(p.output, result)
    if not result.success:
        log.warning("index failed %d expectation(s):\n%s", len(result.failures),
                    "\n".join(f"  - {f.line}" for f in result.failures))  # fmt: skip
    return result


__all__ = [
    "OutputError",
    "Plan",
    "check_manifest",
    "check_output",
    "next_round",
    "plan",
    "write_index_validation",
    "write_rejects",
    "write_validation",
]
