"""The bounded feature sample: seeded, order-free, mergeable exactly, duplicates kept once."""

import numpy as np
import pytest

from diffgen.metrics.reservoir import Reservoir, ReservoirError, bottom_k, sample_keys


def _rows(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    return [f"r{i:04d}" for i in range(n)], np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def _same(a: Reservoir, b: Reservoir) -> bool:
    return a.ids.tolist() == b.ids.tolist() and np.array_equal(a.features, b.features) and a.offered == b.offered


def test_merged_shards_equal_a_single_pass():
    ids, x = _rows(500)
    whole = Reservoir("b", "r", 4, capacity=64, seed=3).update(ids, x)
    shards = []
    for part in np.array_split(np.random.default_rng(1).permutation(500), 4):  # shuffled, uneven shards
        shard = Reservoir("b", "r", 4, capacity=64, seed=3)
        for batch in np.array_split(part, 5):
            shard.update([ids[i] for i in batch], x[batch])
        shards.append(shard)
    merged = shards[3].merge(shards[1]).merge(shards[0].merge(shards[2]))
    assert len(merged) == 64 and _same(merged, whole)
    assert merged.ids.tolist() == bottom_k(ids, 3, 64)


def test_the_seed_chooses_the_sample_and_a_retry_counts_once():
    ids, x = _rows(200)
    a = Reservoir("b", "r", 4, capacity=20, seed=1).update(ids, x)
    b = Reservoir("b", "r", 4, capacity=20, seed=2).update(ids, x)
    assert set(a.ids) != set(b.ids)
    again = Reservoir("b", "r", 4, capacity=20, seed=1).update(ids, x).update(ids[:50], x[:50])
    assert again.ids.tolist() == a.ids.tolist() and len(set(again.ids)) == 20
    small = Reservoir("b", "r", 4, capacity=1000, seed=1).update(ids, x).update(ids[:10], x[:10])
    assert len(small) == 200  # below capacity: every distinct row, once


def test_keys_are_stable_across_processes():
    # Golden keys: blake2b of (seed, id), never Python's salted hash().
    assert sample_keys(["a", "b"], 0).tolist() == sample_keys(["a", "b"], 0).tolist()
    assert int(sample_keys(["a"], 0)[0]) == int.from_bytes(
        __import__("hashlib").blake2b(b"0\x00a", digest_size=8).digest(), "big"
    )


def test_round_trips_and_refuses_other_modes():
    ids, x = _rows(30)
    sample = Reservoir("clip:m@1", "pil", 4, capacity=10, seed=5).update(ids, x)
    back = Reservoir.from_bytes(sample.to_bytes())
    assert _same(back, sample) and (back.capacity, back.seed, back.backbone) == (10, 5, "clip:m@1")
    with pytest.raises(ReservoirError, match="different modes"):
        sample.merge(Reservoir("clip:m@1", "pil", 4, capacity=10, seed=6))
    with pytest.raises(ReservoirError, match="not a feature sample"):
        Reservoir.from_bytes(b"junk")
    with pytest.raises(ReservoirError, match="shape"):
        sample.update(["x"], np.zeros((2, 4)))
