"""The generation pipeline as a recipe on Ray Data.

1. read the manifest and validate it (before any model loads)
2. expand to one record per image; drop records already committed (resume)
3. generate: an actor pool, one diffusers pipeline per actor, on its GPU or the CPU
4. write: PNG-encode, write images, commit an index shard per batch
5. read the index back, reconcile the counts, write run.json last
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import ray

from diffgen import storage
from diffgen.loading import model_index, pipeline_class
from diffgen.records import expand
from diffgen.stages import GenerateStage, WriteStage, check_chain
from diffgen.versions import package_versions
from pipelines.cluster import connect
from schemas.job import JobSpec
from schemas.manifest import validate_manifest
from schemas.record import RecordStatus
from schemas.run import RunCounts, RunSummary

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
INDEX_DIR = "index"


class _GenerateActor(GenerateStage):
    """Loads the model when Ray starts the actor, so a bad model fails before any batch is queued.

    Ray Data restarts a lost actor and retries its in-flight batches (its defaults:
    unbounded restarts and retries), so a dead node's work is redone elsewhere.
    """

    def __init__(self, spec: JobSpec):
        super().__init__(spec)
        self.setup()


def read_manifest(uri: str) -> pa.Table:
    table = storage.read_parquet(uri)
    validate_manifest(table, uri)
    return table


def committed_ids(output: str) -> set[str]:
    """Record ids already in the output's index: a re-run skips them."""
    index = storage.read_parquet_folder(storage.join(output, INDEX_DIR))
    return set() if index is None else set(index.column("record_id").to_pylist())


def _blocks(table: pa.Table, batch_size: int, num_actors: int) -> list[pa.Table]:
    """Whole batches per block, and enough blocks (~4 per actor) that every actor gets work."""
    batches_per_block = max(1, min(8, table.num_rows // (batch_size * num_actors * 4)))
    rows = batch_size * batches_per_block
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def run(spec: JobSpec) -> RunSummary:
    started, t0 = datetime.now(UTC), time.perf_counter()
    manifest_uri, output = spec.require_io()
    run_id = spec.run_id or "run"

    manifest = read_manifest(manifest_uri)
    records = expand(manifest, spec)
    done = committed_ids(output)
    todo = records.filter(pc.invert(pc.is_in(records.column("record_id"), pa.array(sorted(done), pa.string()))))
    log.info("%d manifest rows -> %d images; %d already committed, %d to generate",
             manifest.num_rows, records.num_rows, records.num_rows - todo.num_rows, todo.num_rows)

    # Cheap pre-flight on the driver: a missing or foreign model folder fails here, not in an actor.
    pipeline_class(model_index(spec.model)[1])
    compute = spec.compute
    writer = WriteStage(spec, output, run_id)
    check_chain(todo.column_names, [GenerateStage(spec), writer])
    if todo.num_rows:
        connect()
        ds = ray.data.from_arrow(_blocks(todo, compute.batch_size, compute.num_actors))
        ds = ds.map_batches(
            _GenerateActor,
            fn_constructor_args=(spec,),
            batch_size=compute.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=compute.num_actors),
            num_gpus=compute.gpus_per_actor,
            num_cpus=compute.cpus_per_actor,
        )
        ds = ds.map_batches(writer, batch_size=compute.batch_size, batch_format="pyarrow", num_cpus=0.5)
        for _ in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            pass

    index = storage.read_parquet_folder(storage.join(output, INDEX_DIR))
    summary = _summarize(spec, run_id, manifest_uri, output, manifest.num_rows, records, index, started, t0)
    storage.write_bytes(storage.join(output, RUN_FILE), summary.model_dump_json(indent=2).encode())
    return summary


def _summarize(spec, run_id, manifest_uri, output, manifest_rows, records, index, started, t0) -> RunSummary:
    expected = set(records.column("record_id").to_pylist())
    status = {}
    if index is not None:
        for rid, st in zip(index.column("record_id").to_pylist(), index.column("status").to_pylist()):
            if rid in expected:
                status[rid] = st
    counts = RunCounts(
        manifest_rows=manifest_rows,
        images_expected=len(expected),
        images_written=sum(s == RecordStatus.WRITTEN for s in status.values()),
        rejected=sum(s == RecordStatus.REJECTED for s in status.values()),
        failed=sum(s == RecordStatus.FAILED for s in status.values()) + len(expected - status.keys()),
    )
    wall = time.perf_counter() - t0
    return RunSummary(
        run_id=run_id,
        status="complete" if counts.images_written == counts.images_expected else "partial",
        manifest=manifest_uri,
        output=output,
        job=spec.model_dump(mode="json"),
        counts=counts,
        started_at=started,
        finished_at=datetime.now(UTC),
        wall_time_s=round(wall, 3),
        images_per_second=round(counts.images_written / wall, 4) if wall > 0 else 0.0,
        versions=package_versions(),
    )
