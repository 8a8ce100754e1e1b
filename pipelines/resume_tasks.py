"""Resume over a large index on the cluster, so that no process holds the whole index.

The run's slots and the index's rows are split into buckets by slot id (`diffgen.dataset.resume.
slot_buckets`: every attempt of a slot, written by any run, lands in the slot's bucket). Split tasks
read groups of index shards (only the columns the walk reads) and cut them by bucket; one walk task per
bucket gathers its pieces and runs the same columnar walk a small run does in-process
(`diffgen.dataset.resume.resume_state`); the driver merges the states (`merge_states`). A map and a
reduce in Ray tasks: the hash-partitioned join of the run's slots with the committed index.

Cost per process: a split task holds its shards' rows; a walk task one bucket of slots and of rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyarrow as pa
import ray

from diffgen.dataset.index import corrupt_index_error, index_files, read_shards
from diffgen.dataset.resume import (
    READS,
    Attempts,
    ResumeState,
    merge_states,
    resume_state,
    slot_buckets,
    split_by_bucket,
)
from diffgen.pipelines.cluster import connect

# Above this many slots a resume is walked in tasks; below, one process walks it (no Ray needed).
TASK_SLOTS = 1_000_000
# Slots per walk task, and index shards per split task.
BUCKET_SLOTS = 500_000
SHARDS_PER_SPLIT = 4


@ray.remote(num_cpus=1)
def _split(uris: list[str], buckets: int) -> tuple:
    """These shards' rows (the walk's columns) cut by slot bucket, then the lines naming unreadable shards."""
    tables, bad = read_shards(uris, READS)
    parts = [t for t in tables.values() if t.num_rows]
    if not parts:
        return (*([None] * buckets), bad)
    return (*split_by_bucket(pa.concat_tables(parts, promote_options="default"), buckets), bad)


@ray.remote(num_cpus=1)
def _walk(slots: pa.Table, job: dict, control_columns: list[str], fingerprint: Callable[[pa.Table], pa.Table],
          attempts: Attempts, *pieces: pa.Table | None) -> ResumeState:  # fmt: skip
    parts = [t for t in pieces if t is not None and t.num_rows]
    index = pa.concat_tables(parts, promote_options="default") if parts else None
    return resume_state(slots, index, job, control_columns, fingerprint, attempts)


def resume_in_tasks(
    slots: pa.Table,
    output: str,
    job: dict,
    control_columns: list[str],
    fingerprint: Callable[[pa.Table], pa.Table],
    attempts: Attempts,
    *,
    skip_corrupt: bool = False,
    buckets: int | None = None,
) -> ResumeState:
    """`resume_state` of `slots` against `output`'s index, walked in Ray tasks by slot bucket (see the
    module); the same state as one walk. Unreadable shards raise `CorruptIndexError` unless `skip_corrupt`.
    `fingerprint` travels to the tasks, so it must pickle (a module function or a partial of one)."""
    connect()
    buckets = buckets or max(1, math.ceil(slots.num_rows / BUCKET_SLOTS))
    uris = index_files(output)
    splits = [_split.options(num_returns=buckets + 1).remote(uris[k:k + SHARDS_PER_SPLIT], buckets)
              for k in range(0, len(uris), SHARDS_PER_SPLIT)]  # fmt: skip
    bad = [line for split in splits for line in ray.get(split[-1])]
    if bad and not skip_corrupt:
        raise corrupt_index_error(output, bad)
    of_slot = slot_buckets(slots.column("slot_id"), buckets)
    walks = [_walk.remote(slots.filter(pa.array(of_slot == b)), job, control_columns, fingerprint, attempts,
                          *(split[b] for split in splits)) for b in range(buckets)]  # fmt: skip
    return merge_states(ray.get(walks))


__all__ = ["BUCKET_SLOTS", "TASK_SLOTS", "resume_in_tasks"]
