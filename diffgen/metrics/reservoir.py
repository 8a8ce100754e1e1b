"""A bounded, mergeable, deterministic sample of feature vectors: what KID, CMMD, precision/recall and
the utility probe need, where FID needs only moments (`diffgen.metrics.frechet.FeatureStats`).

Bottom-k sampling (Cohen and Kaplan, "Summarizing data using bottom-k sketches", PODC 2007): every
item gets a key, a 64-bit hash of (seed, item id), and the sample is the `capacity` items with the
smallest keys. Which items are kept depends only on the seed and the ids offered, never on their
order or on how they were split among actors, so merging the samples of shards gives exactly the
sample of a single pass, and an item offered twice (a retried batch) is kept once. The keep-set is a
uniform random sample without replacement of the distinct ids offered.

Features are kept as float32 (what the backbones compute in); like `FeatureStats`, a sample carries
its backbone, resize mode and dimension, and refuses to merge with another mode.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np

DEFAULT_CAPACITY = 10_000
_FORMAT = "diffgen-feature-sample/1"


class ReservoirError(ValueError):
    """Samples that cannot be combined or read."""


def sample_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """The bottom-k keys of `ids` under `seed`: uint64, stable across processes and machines."""
    prefix = f"{int(seed)}\x00".encode()
    return np.array(
        [int.from_bytes(hashlib.blake2b(prefix + i.encode(), digest_size=8).digest(), "big") for i in ids],
        dtype=np.uint64,
    )


def bottom_k(ids: Sequence[str], seed: int, capacity: int) -> list[str]:
    """The ids a sample of `capacity` under `seed` keeps, without their features (to choose what to read)."""
    unique = sorted(set(ids))
    keys = sample_keys(unique, seed)
    order = np.lexsort((np.array(unique, dtype=object), keys))[:capacity]
    return [unique[i] for i in order]


class Reservoir:
    """Up to `capacity` feature rows of one group, chosen by bottom-k keys under `seed`."""

    def __init__(self, backbone: str, resize: str, dim: int, *, capacity: int = DEFAULT_CAPACITY, seed: int = 0):
        if dim < 1 or capacity < 1:
            raise ReservoirError(f"dim and capacity must be at least 1, got {dim} and {capacity}")
        self.backbone, self.resize, self.dim = backbone, resize, int(dim)
        self.capacity, self.seed = int(capacity), int(seed)
        self.offered = 0  # rows offered, duplicates included: the population the sample stands for
        self.keys = np.zeros(0, dtype=np.uint64)
        self.ids = np.zeros(0, dtype=object)
        self.features = np.zeros((0, self.dim), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"Reservoir(backbone={self.backbone!r}, dim={self.dim}, size={len(self)}/{self.capacity}, "
                f"seed={self.seed}, offered={self.offered})")  # fmt: skip

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def update(self, ids: Sequence[str], features: np.ndarray) -> Reservoir:
        """Offer rows `features` (N, dim) named by `ids`; returns self so calls can chain."""
        x = np.asarray(features)
        ids = list(ids)
        if x.ndim != 2 or x.shape[1] != self.dim or x.shape[0] != len(ids):
            raise ReservoirError(f"features must have shape ({len(ids)}, {self.dim}) for {len(ids)} ids, got {x.shape}")
        if not np.isfinite(x).all():
            raise ReservoirError("features contain NaN or Inf")
        self.offered += len(ids)
        keys, ids = sample_keys(ids, self.seed), np.array(ids, dtype=object)
        if len(self) == self.capacity:  # full: only rows keyed below the largest kept key can enter
            fits = keys <= self.keys[-1]
            keys, ids, x = keys[fits], ids[fits], x[fits]
        self._keep(np.concatenate([self.keys, keys]), np.concatenate([self.ids, ids]),
                   np.concatenate([self.features, x.astype(np.float32)]))  # fmt: skip
        return self

    def _keep(self, keys: np.ndarray, ids: np.ndarray, features: np.ndarray) -> None:
        order = np.lexsort((ids, keys))
        keys, ids, features = keys[order], ids[order], features[order]
        # Equal ids have equal keys, so duplicates sit next to each other: keep the first.
        first = np.ones(len(ids), dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        keep = np.flatnonzero(first)[: self.capacity]
        self.keys, self.ids, self.features = keys[keep], ids[keep], features[keep]

    def merge(self, other: Reservoir) -> Reservoir:
        """A new sample of both: equal to the sample of one pass over everything both were offered."""
        mine = (self.backbone, self.resize, self.dim, self.capacity, self.seed)
        theirs = (other.backbone, other.resize, other.dim, other.capacity, other.seed)
        if mine != theirs:
            raise ReservoirError(
                f"cannot merge samples of different modes: backbone/resize/dim/capacity/seed {mine} vs {theirs}"
            )
        merged = Reservoir(self.backbone, self.resize, self.dim, capacity=self.capacity, seed=self.seed)
        merged.offered = self.offered + other.offered
        merged._keep(np.concatenate([self.keys, other.keys]), np.concatenate([self.ids, other.ids]),
                     np.concatenate([self.features, other.features]))  # fmt: skip
        return merged

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf, format=np.array(_FORMAT), backbone=np.array(self.backbone), resize=np.array(self.resize),
            dim=np.array(self.dim), capacity=np.array(self.capacity), seed=np.array(self.seed),
            offered=np.array(self.offered), keys=self.keys, ids=np.array(self.ids.tolist(), dtype=str),
            features=self.features,
        )  # fmt: skip
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reservoir:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                f = {name: npz[name] for name in npz.files}
        except Exception as e:  # numpy raises several unrelated types for a damaged archive
            raise ReservoirError(f"not a feature sample file: {type(e).__name__}: {e}") from None
        if f.get("format") is None or str(f["format"]) != _FORMAT:
            raise ReservoirError(f"not a feature sample file (expected format {_FORMAT})")
        sample = cls(str(f["backbone"]), str(f["resize"]), int(f["dim"]), capacity=int(f["capacity"]),
                     seed=int(f["seed"]))  # fmt: skip
        n = f["keys"].shape[0]
        if f["features"].shape != (n, sample.dim) or f["ids"].shape != (n,):
            raise ReservoirError(f"feature sample file is inconsistent: {n} keys, features {f['features'].shape}")
        sample.offered = int(f["offered"])
        sample.keys = f["keys"].astype(np.uint64)
        sample.ids = np.array(f["ids"].tolist(), dtype=object)
        sample.features = f["features"].astype(np.float32)
        return sample
