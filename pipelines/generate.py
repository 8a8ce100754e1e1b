"""The generation pipeline as a recipe on Ray Data.

1. plan: validate the job, model folder, manifest and output; expand to one slot per image asked
   for; find each slot's next attempt in the index (resume). No model loads before this passes.
2. lease the output (one run writes it at a time)
3. rounds: generate (an actor pool, one diffusers pipeline per actor, on its GPU or the CPU) → QC
   (own actor, optional: CLIP score, black/flat/duplicate checks) → write (PNG, watermark, provenance,
   an index shard per batch); then replacements, with derived seeds, for what QC rejected or a
   replaceable failure lost, until every slot is filled or has used policy.max_attempts
4. compact the index (every attempt kept, one row per attempt); check it with the index expectation
   suite (qc/expectations/); with QC, merge the FID statistics and write qc/report.*
5. reconcile the counts per slot, write run.json last
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import ray

from diffgen.dataset import storage
from diffgen.dataset.imagefolder import write as write_imagefolder
from diffgen.dataset.index import by_slot, compact, index_files, quarantine_corrupt_shards, read_index
from diffgen.dataset.layout import RUN_FILE
from diffgen.dataset.lease import Lease, hold_lease
from diffgen.dataset.webdataset import pack as pack_webdataset
from diffgen.generation.model_folder import ModelLoadError
from diffgen.pipelines.cluster import connect
from diffgen.pipelines.plan import (
    Plan,
    next_round,
    plan,
    stage_chain,
    write_index_validation,
    write_rejects,
    write_validation,
)
from diffgen.pipelines.progress import Progress
from diffgen.pipelines.qc import StatsSink, gather, qc_map
from diffgen.pipelines.resources import wait_for_resources
from diffgen.pipelines.write import write_map
from diffgen.reporting.report import QcEvidence, build_report, write_report
from diffgen.reporting.utility import score_output as score_utility
from diffgen.reporting.versions import package_versions
from diffgen.schemas.job import ComputeSpec, JobSpec
from diffgen.schemas.record import RecordStatus
from diffgen.schemas.run import GroupFill, RunCounts, RunSummary
from diffgen.stages.chain import check_chain
from diffgen.stages.generate import GenerateStage

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class LoadFailures:
    """Where generation actors report a model that fails to load: Ray hands the driver only an
    `ActorDiedError` text, and the run must say which file (exit 2), not that an actor died (exit 1)."""

    def __init__(self):
        self.messages: list[str] = []

    def put(self, message: str) -> None:
        self.messages.append(message)

    def first(self) -> str | None:
        return self.messages[0] if self.messages else None


class _GenerateActor(GenerateStage):
    """Loads the model when Ray starts the actor, so a bad model fails before any batch is queued.

    Ray Data restarts a lost actor and retries its in-flight batches (its defaults:
    unbounded restarts and retries), so a dead node's work is redone elsewhere.
    """

    def __init__(self, spec: JobSpec, failures: ray.actor.ActorHandle):
        super().__init__(spec)
        try:
            self.setup()
        except ModelLoadError as e:
            ray.get(failures.put.remote(str(e)))
            raise


# QC and writes take batches of at least this many rows, whatever the generation batch: the
# micro CLIP scores 16 images at 0.6 of the cost of 4 x 4 (5.0 vs 8.6 ms per 64x64 image on 2
# CPU cores), and each write batch is one index shard, so fewer and larger shards.
SCORE_AND_WRITE_ROWS = 16


def score_and_write_rows(compute: ComputeSpec) -> int:
    """Rows per QC and write batch: the generation batch, or `SCORE_AND_WRITE_ROWS` when that is larger."""
    return max(compute.batch_size, SCORE_AND_WRITE_ROWS)


# At most this many generation batches per Ray Data block: the driver's executor works per block
# (tasks, object refs, metrics), so large blocks keep its CPU per image small at 10 million images.
MAX_BATCHES_PER_BLOCK = 32


def _blocks(table: pa.Table, batch_size: int, num_actors: int) -> list[pa.Table]:
    """Whole batches per block, and enough blocks (~4 per actor) that every actor gets work."""
    batches_per_block = max(1, min(MAX_BATCHES_PER_BLOCK, table.num_rows // (batch_size * num_actors * 4)))
    rows = batch_size * batches_per_block
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def execute(p: Plan, sink: ray.actor.ActorHandle | None, progress: Progress | None = None, *,
            generator: type = _GenerateActor) -> None:  # fmt: skip
    """Generate and write every record in `p.todo`; with QC on, the scoring actors report to `sink`; every
    batch written is counted in `progress`. `generator` is the generation actor class, constructed with
    (spec, failures); only the scale benchmark passes another (a stand-in that measures the pipeline
    around the model)."""
    spec, compute = p.spec, p.spec.compute
    # Ray Data's own bars ("Total Progress: 0/?") only with debug logging: `progress` says what a person needs.
    ray.data.DataContext.get_current().enable_progress_bars = log.isEnabledFor(logging.DEBUG)
    check_chain(p.todo.column_names, stage_chain(spec, p.output, p.run_id, p.credentials))
    failures = LoadFailures.remote()
    ds = ray.data.from_arrow(_blocks(p.todo, compute.batch_size, compute.num_actors))
    ds = ds.map_batches(
        generator,
        fn_constructor_args=(spec, failures),
        batch_size=compute.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=compute.num_actors),
        num_gpus=compute.gpus_per_actor,
        num_cpus=compute.cpus_per_actor,
    )
    rows = score_and_write_rows(compute)
    if sink is not None:
        ds = qc_map(ds, spec.qc, sink, batch_size=rows, gpus=compute.gpus_per_actor, niceness=compute.helper_niceness)
    ds = write_map(ds, p, batch_size=rows)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if progress is not None:
                progress.add(batch)
    except Exception:
        load_error = ray.get(failures.first.remote())
        if load_error is not None:
            raise ModelLoadError(load_error) from None
        raise


def generate_rounds(p: Plan, lease: Lease, *, generator: type = _GenerateActor) -> tuple[Plan, QcEvidence | None]:
    """Round 0 makes every unsettled slot's next attempt; each later round makes replacements for what the
    round before rejected (or lost to a replaceable failure), until every slot is settled or has used
    `policy.max_attempts`. One FID statistics sink serves every round. Returns the plan as it ends.
    `generator`: see `execute`."""
    if not p.todo.num_rows:
        return p, None
    connect()
    wait_for_resources(p.spec, p.spec.compute.resource_wait_s)
    sink = StatsSink.remote() if p.spec.qc.enabled else None
    slots = p.records.num_rows
    progress = Progress(slots, already=slots - pc.count_distinct(p.todo.column("slot_id")).as_py())
    for round_number in range(p.spec.policy.max_attempts):
        if not p.todo.num_rows:
            break
        attempts = sorted(pc.unique(p.todo.column("attempt")).to_pylist())
        log.info("round %d: %d image(s) to make (attempts %s)", round_number, p.todo.num_rows, attempts)
        before = (progress.written, progress.rejected, progress.failed)
        execute(p, sink, progress, generator=generator)
        progress.emit()
        lease.check()  # a run that lost its lease leaves the output to the run that holds it
        if (progress.written - before[0], progress.rejected - before[1], progress.failed - before[2]) == (
            p.todo.num_rows, 0, 0,
        ):  # fmt: skip
            # Every attempt of the round was written: nothing to replace, and no need to walk the index again.
            p = replace(p, todo=p.todo.slice(0, 0))
            break
        p = next_round(p)
    return p, None if sink is None else QcEvidence(*gather(sink))


def run(spec: JobSpec) -> RunSummary:
    """The whole recipe, holding the output's lease (`diffgen.dataset.lease`) from the first write to run.json."""
    started, t0 = datetime.now(UTC), time.perf_counter()
    seen = index_files(spec.output) if spec.output is not None else []
    p = plan(spec)
    with hold_lease(p.output, p.run_id) as lease:
        if spec.policy.corrupt_index == "quarantine":
            for uri in quarantine_corrupt_shards(p.output):
                log.warning("index shard %s cannot be read: moved to quarantine/, its records are made again", uri)
        if index_files(p.output) != seen:  # another run wrote before this one held the lease
            p = plan(spec)
        return _produce(p, lease, started, t0)


def _produce(p: Plan, lease: Lease, started: datetime, t0: float) -> RunSummary:
    spec = p.spec
    log.info("plan: %s", p.describe())
    write_rejects(p)
    write_validation(p)
    p, evidence = generate_rounds(p, lease)
    lease.check()
    removed = compact(p.output, p.expected, set(p.records.column("slot_id").to_pylist()))
    if removed:
        log.info("index compacted: %d superseded row(s) removed", removed)
    index = read_index(p.output)
    write_index_validation(p, index)
    _warn_truncated(index)
    if spec.webdataset.enabled:
        pack_webdataset(p.output, index, spec.webdataset.shard_max_bytes, min_shards=spec.webdataset.min_shards,
                        split_by=spec.webdataset.split_by)  # fmt: skip
    if spec.qc.enabled and index is not None:
        evidence = evidence or QcEvidence({}, 0, None)
        write_report(build_report(p.output, spec.qc, index, evidence, created_at=datetime.now(UTC),
                                  fill_by=spec.policy.fill_by))
        if spec.qc.utility is not None:  # qc.utility: train on synthetic, test on real (qc/utility.json)
            score_utility(p.output, spec.qc, label_samples=evidence.label_samples, created_at=datetime.now(UTC))
    summary = summarize(p, index, started, time.perf_counter() - t0)
    write_imagefolder(p.output, index, summary.model_dump(mode="json"))  # metadata.parquet, README.md
    lease.check()
    storage.write_bytes(storage.join(p.output, RUN_FILE), summary.model_dump_json(indent=2).encode())
    return summary


def _warn_truncated(index: pa.Table | None) -> None:
    if index is not None and "prompt_truncated" in index.column_names:
        truncated = sum(bool(v) for v in index.column("prompt_truncated").to_pylist())
        if truncated:
            log.warning("%d image(s) had a prompt longer than a text encoder's token limit; it was truncated "
                        "(index columns prompt_truncated, prompt_truncation)", truncated)  # fmt: skip


def summarize(p: Plan, index: pa.Table | None, started: datetime, wall: float) -> RunSummary:
    counts = slot_counts(p, index)
    lost = counts.rejected + counts.failed
    if lost == 0:
        outcome = "complete"
    elif lost <= p.spec.policy.max_lost_fraction * counts.images_expected:
        outcome = "partial"
    else:
        outcome = "failed"
    return RunSummary(
        run_id=p.run_id,
        status=outcome,
        met_policy=outcome == "complete" or (outcome == "partial" and not p.spec.policy.require_full),
        manifest=spec_manifest(p.spec, p.manifest_uri),
        output=p.output,
        job=p.spec.model_dump(mode="json"),
        counts=counts,
        started_at=started,
        finished_at=datetime.now(UTC),
        wall_time_s=round(wall, 3),
        images_per_second=round(counts.images_written / wall, 4) if wall > 0 else 0.0,
        versions=package_versions(),
    )


def spec_manifest(spec: JobSpec, read_from: str) -> str:
    """The manifest as run.json names it: the submitter's URI when the run read a shipped copy."""
    return spec.manifest_source or read_from


def slot_counts(p: Plan, index: pa.Table | None) -> RunCounts:
    """What became of every slot: filled (and whether by a replacement), or unfilled and why (the reason of
    its last attempt; `not_run` when none reached the index, `invalid_row` for rows the policy skipped)."""
    attempts = _attempt_rows(p, index)
    unfilled: Counter[str] = Counter({"invalid_row": p.rejected_images} if p.rejected_images else {})
    written = rejected = replaced = 0
    filled_slots = set()
    for slot in p.records.column("slot_id").to_pylist():
        rows = sorted(attempts.get(slot, []), key=lambda r: r["attempt"] or 0)
        done = [r for r in rows if r["status"] == RecordStatus.WRITTEN.value]
        if done:
            written, replaced = written + 1, replaced + int((done[0]["attempt"] or 0) > 0)
            filled_slots.add(slot)
            continue
        reason = _unfilled_reason(rows[-1] if rows else None)
        unfilled[reason] += 1
        rejected += bool(rows) and rows[-1]["status"] == RecordStatus.REJECTED.value
    return RunCounts(
        manifest_rows=p.manifest_rows,
        invalid_rows=0 if p.rejects is None else p.rejects.num_rows,
        images_expected=p.images_expected,
        images_written=written,
        rejected=rejected + p.rejected_images,
        failed=p.records.num_rows - written - rejected,
        attempts=sum(len(rows) for rows in attempts.values()),
        replaced=replaced,
        unfilled=dict(sorted(unfilled.items())),
        groups=_group_fill(p, filled_slots),
    )


def _attempt_rows(p: Plan, index: pa.Table | None) -> dict[str, list[dict]]:
    """The index rows of the plan's attempts (their fingerprints current), by slot."""
    if index is None:
        return {}
    columns = [c for c in ("record_id", "slot_id", "attempt", "status", "replaceable", "qc_reasons", "fingerprint")
               if c in index.column_names]  # fmt: skip
    rows = index.select(columns).to_pylist()
    return by_slot(r for r in rows if p.expected.get(r["record_id"]) == r.get("fingerprint"))


def _unfilled_reason(last: dict | None) -> str:
    if last is None:
        return "not_run"
    if last["status"] == RecordStatus.REJECTED.value:
        reasons = last.get("qc_reasons") or []
        return reasons[0]["reason"] if reasons else "rejected_input"
    return "failed_replaceable" if last.get("replaceable") else "failed"


def _group_fill(p: Plan, filled: set[str]) -> dict[str, GroupFill] | None:
    column = p.spec.policy.fill_by
    if column is None:
        return None
    groups: dict[str, GroupFill] = {}
    for slot, value in zip(p.records.column("slot_id").to_pylist(), p.records.column(column).to_pylist()):
        g = groups.setdefault(str(value), GroupFill(requested=0, written=0))
        groups[str(value)] = GroupFill(requested=g.requested + 1, written=g.written + (slot in filled))
    return dict(sorted(groups.items()))
