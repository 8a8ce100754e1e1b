"""The resume walk in Ray tasks (`diffgen.pipelines.resume_tasks`): index shards split by slot bucket in
split tasks, one walk task per bucket, states merged. On random outputs (every status, replacement
chains, stale fingerprints, input images changed on disk or gone, rows of other runs) it says what one
walk over the whole index says, and an unreadable shard is named as it is today."""

import hashlib

import numpy as np
import pytest

from diffgen.dataset import storage
from diffgen.dataset.index import CorruptIndexError, read_index
from diffgen.dataset.layout import index_shard
from diffgen.dataset.resume import READS, Attempts, resume_state
from diffgen.pipelines.resume_tasks import resume_in_tasks
from tests.diffgen.dataset.resume_reference import (
    CONTROLS,
    JOB,
    fingerprint_fn,
    random_index,
    random_inputs_now,
    random_slots,
)  # fmt: skip

CONTENT = {"h0": b"zero", "h1": b"one"}
HASHES = {name: hashlib.sha256(data).hexdigest() for name, data in CONTENT.items()}


def _output(tmp_path, seed: int, n: int = 40, shards: int = 5):
    """A random output on disk: its slots, and an index in `shards` shards whose input images exist (or not)."""
    rng = np.random.default_rng(seed)
    prefix = f"{tmp_path}/"
    slots = random_slots(rng, n, prefix=prefix)
    index = random_index(rng, slots, HASHES)
    for uri, name in random_inputs_now(rng, prefix=prefix).items():
        if name is not None:
            storage.write_bytes(uri, CONTENT[name])
    out = str(tmp_path / "out")
    for part in np.array_split(np.arange(index.num_rows), shards):
        shard = index.take(part)
        storage.write_parquet(shard, storage.join(out, index_shard(shard.column("record_id").to_pylist())))
    return slots, out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_walking_in_tasks_by_bucket_gives_the_state_of_one_walk(ray_cluster, tmp_path, seed):
    slots, out = _output(tmp_path, seed)
    attempts = Attempts(True, 3, True)
    one = resume_state(slots, read_index(out, columns=READS), JOB, CONTROLS, fingerprint_fn("now"), attempts)
    tasks = resume_in_tasks(slots, out, JOB, CONTROLS, fingerprint_fn("now"), attempts, buckets=3)
    assert sorted(tasks.todo.column("record_id").to_pylist()) == sorted(one.todo.column("record_id").to_pylist())
    assert tasks.expected == one.expected
    assert tasks.changed == one.changed
    assert tasks.committed_slots == one.committed_slots
    # the random output holds every case: slots to make, slots settled, slots changed, replacement attempts
    assert 0 < tasks.todo.num_rows < slots.num_rows and tasks.changed and len(tasks.expected) > slots.num_rows


def test_an_unreadable_shard_is_named_or_skipped_when_asked(ray_cluster, tmp_path):
    slots, out = _output(tmp_path, 4)
    bad = storage.join(out, "index", "part-00000000000000000000.parquet")
    storage.write_bytes(bad, b"not parquet")
    args = (slots, out, JOB, CONTROLS, fingerprint_fn("now"), Attempts(True, 3, True))
    with pytest.raises(CorruptIndexError, match=r"1 index shard\(s\) of .* cannot be read: .*part-0{20}\.parquet"):
        resume_in_tasks(*args, buckets=2)
    skipped = resume_in_tasks(*args, buckets=2, skip_corrupt=True)
    one = resume_state(slots, read_index(out, skip_corrupt=True, columns=READS), *args[2:])
    assert skipped.expected == one.expected and skipped.committed_slots == one.committed_slots
