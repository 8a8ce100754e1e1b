"""The generation pipeline as a recipe on Ray Data.

1. plan: validate the job, model folder, manifest and output; expand to one record per
   image; drop records already committed (resume). No model loads before this passes.
2. generate: an actor pool, one diffusers pipeline per actor, on its GPU or the CPU
3. qc (when enabled): CLIP score, black/flat/duplicate checks on their own actor; rejects below thresholds
4. write: PNG-encode, write images, commit an index shard per batch
5. compact the index to one row per record; check it with the index expectation suite (qc/expectations/);
   with QC, merge the FID statistics and write qc/report.*
6. reconcile the counts, write run.json last
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pyarrow as pa
import ray

from diffgen.dataset import storage
from diffgen.dataset.index import compact, index_files, quarantine_corrupt_shards, read_index
from diffgen.dataset.layout import RUN_FILE
from diffgen.dataset.lease import Lease, hold_lease
from diffgen.dataset.webdataset import pack as pack_webdataset
from diffgen.generation.model_folder import ModelLoadError
from diffgen.pipelines.cluster import connect
from diffgen.pipelines.plan import Plan, plan, stage_chain, write_index_validation, write_rejects, write_validation
from diffgen.pipelines.qc import StatsSink, gather, qc_map
from diffgen.pipelines.resources import wait_for_resources
from diffgen.pipelines.write import write_map
from diffgen.reporting.report import QcEvidence, build_report, write_report
from diffgen.reporting.versions import package_versions
from diffgen.schemas.job import ComputeSpec, JobSpec
from diffgen.schemas.record import RecordStatus
from diffgen.schemas.run import RunCounts, RunSummary
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


def _blocks(table: pa.Table, batch_size: int, num_actors: int) -> list[pa.Table]:
    """Whole batches per block, and enough blocks (~4 per actor) that every actor gets work."""
    batches_per_block = max(1, min(8, table.num_rows // (batch_size * num_actors * 4)))
    rows = batch_size * batches_per_block
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def execute(p: Plan) -> QcEvidence | None:
    """Generate and write every record in `p.todo`; with QC on, what the scoring actors measured."""
    spec, compute = p.spec, p.spec.compute
    check_chain(p.todo.column_names, stage_chain(spec, p.output, p.run_id, p.credentials))
    connect()
    wait_for_resources(spec, compute.resource_wait_s)
    sink = StatsSink.remote() if spec.qc.enabled else None
    failures = LoadFailures.remote()
    ds = ray.data.from_arrow(_blocks(p.todo, compute.batch_size, compute.num_actors))
    ds = ds.map_batches(
        _GenerateActor,
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
        for _ in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            pass
    except Exception:
        load_error = ray.get(failures.first.remote())
        if load_error is not None:
            raise ModelLoadError(load_error) from None
        raise
    if sink is None:
        return None
    stats, covered, reference = gather(sink)
    return QcEvidence(stats, covered, reference)


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
    evidence = execute(p) if p.todo.num_rows else None
    lease.check()  # a run that lost its lease leaves the index and run.json to the one that holds it
    current = dict(zip(p.records.column("record_id").to_pylist(), p.records.column("fingerprint").to_pylist()))
    removed = compact(p.output, current)
    if removed:
        log.info("index compacted: %d superseded row(s) removed", removed)
    index = read_index(p.output)
    write_index_validation(p, index)
    if index is not None and "prompt_truncated" in index.column_names:
        truncated = sum(bool(v) for v in index.column("prompt_truncated").to_pylist())
        if truncated:
            log.warning("%d image(s) had a prompt longer than a text encoder's token limit; it was truncated "
                        "(index columns prompt_truncated, prompt_truncation)", truncated)  # fmt: skip
    if spec.webdataset.enabled:
        pack_webdataset(p.output, index, spec.webdataset.shard_max_bytes)
    if spec.qc.enabled and index is not None:
        evidence = evidence or QcEvidence({}, 0, None)
        write_report(build_report(p.output, spec.qc, index, evidence, created_at=datetime.now(UTC)))
    summary = summarize(p, index, started, time.perf_counter() - t0)
    lease.check()
    storage.write_bytes(storage.join(p.output, RUN_FILE), summary.model_dump_json(indent=2).encode())
    return summary


def summarize(p: Plan, index: pa.Table | None, started: datetime, wall: float) -> RunSummary:
    expected = set(p.records.column("record_id").to_pylist())
    status: dict[str, str] = {}
    if index is not None:
        for rid, st in zip(index.column("record_id").to_pylist(), index.column("status").to_pylist()):
            if rid in expected:
                status[rid] = st
    counts = RunCounts(
        manifest_rows=p.manifest_rows,
        invalid_rows=0 if p.rejects is None else p.rejects.num_rows,
        images_expected=p.images_expected,
        images_written=sum(s == RecordStatus.WRITTEN for s in status.values()),
        rejected=sum(s == RecordStatus.REJECTED for s in status.values()) + p.rejected_images,
        # A record with no index row at all was lost by the run itself: count it, never drop it.
        failed=sum(s == RecordStatus.FAILED for s in status.values()) + len(expected - status.keys()),
    )
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
        manifest=p.manifest_uri,
        output=p.output,
        job=p.spec.model_dump(mode="json"),
        counts=counts,
        started_at=started,
        finished_at=datetime.now(UTC),
        wall_time_s=round(wall, 3),
        images_per_second=round(counts.images_written / wall, 4) if wall > 0 else 0.0,
        versions=package_versions(),
    )
