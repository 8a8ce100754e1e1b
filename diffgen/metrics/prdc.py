"""Precision, recall, density and coverage of generated features against real ones, on k-NN manifolds.

Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models", ICML 2020; k = 5 as
they recommend. Each real sample gets a ball reaching its k-th nearest real neighbour (Euclidean),
each generated sample one reaching its k-th nearest generated neighbour:

- precision: share of generated samples inside some real ball (fidelity)
- recall: share of real samples inside some generated ball (diversity)
- density: generated samples' real-ball memberships, summed, over k x #generated (fidelity; > 1 possible)
- coverage: share of real balls whose nearest generated sample lies inside them (diversity)

Comparisons are strict (`<`) as in the authors' `prdc` package, so the numbers agree with it. A pure
kernel like `diffgen.metrics.frechet`: distances are computed in blocks of rows, never whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NEAREST_K = 5
# Rows of a distance matrix computed at once (BLOCK_ROWS x 10,000 float64 is 80 MB).
BLOCK_ROWS = 1024


class ManifoldError(ValueError):
    """Samples too small or malformed for k-NN manifolds; the message says which."""


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def knn_radii(x: np.ndarray, k: int = NEAREST_K) -> np.ndarray:
    """Distance from each row of `x` to its k-th nearest other row."""
    radii = np.empty(x.shape[0])
    for start in range(0, x.shape[0], BLOCK_ROWS):
        block = _distances(x[start : start + BLOCK_ROWS], x)
        # The row itself sits at distance 0, so the k-th neighbour is the (k+1)-th smallest, as in prdc.
        radii[start : start + block.shape[0]] = np.partition(block, k, axis=1)[:, k]
    return radii


@dataclass(frozen=True)
class ManifoldScores:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int
    backbone: str
    count: int
    reference_count: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _checked(name: str, a: np.ndarray, k: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ManifoldError(f"{name} features must be an (N, D) array, got shape {a.shape}")
    if a.shape[0] <= k:
        raise ManifoldError(f"k-NN manifolds with k={k} need more than {k} {name} samples, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ManifoldError(f"{name} features contain NaN or Inf")
    return a


def prdc(generated: np.ndarray, real: np.ndarray, *, backbone: str, k: int = NEAREST_K) -> ManifoldScores:
    """Precision, recall, density and coverage of `generated` against `real` (features of one backbone)."""
    fake, real = _checked("generated", generated, k), _checked("reference", real, k)
    if fake.shape[1] != real.shape[1]:
        raise ManifoldError(f"features of different dimensions: {fake.shape[1]} vs {real.shape[1]}")
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    inside_real = np.zeros(fake.shape[0])  # per generated sample: how many real balls hold it
    covered = np.zeros(real.shape[0], dtype=bool)
    recalled = np.zeros(real.shape[0], dtype=bool)
    for start in range(0, real.shape[0], BLOCK_ROWS):
        d = _distances(real[start : start + BLOCK_ROWS], fake)  # (real block, fake)
        radii = real_radii[start : start + d.shape[0], None]
        inside_real += (d < radii).sum(axis=0)
        recalled[start : start + d.shape[0]] = (d < fake_radii[None, :]).any(axis=1)
        covered[start : start + d.shape[0]] = d.min(axis=1) < radii[:, 0]
    return ManifoldScores(
        precision=float((inside_real > 0).mean()),
        recall=float(recalled.mean()),
        density=float(inside_real.sum() / (k * fake.shape[0])),
        coverage=float(covered.mean()),
        k=k,
        backbone=backbone,
        count=fake.shape[0],
        reference_count=real.shape[0],
    )
