"""Kernel distances between two feature samples: KID and CMMD, both squared maximum mean discrepancies.

- KID (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018): the unbiased (U-statistic) MMD² with the
  cubic polynomial kernel k(x, y) = (x·y / d + 1)³, over the whole samples rather than random subsets,
  so it needs no seed. Its standard error is the two-sample jackknife's (Arvesen, "Jackknifing
  U-statistics", Ann. Math. Statist. 1969): each leave-one-out estimate comes from kernel row sums, so
  it costs nothing beyond the estimate itself.
- CMMD (Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image Generation",
  CVPR 2024): 1000 x the biased (V-statistic) MMD² with a Gaussian kernel of bandwidth σ = 10 on CLIP
  image embeddings scaled to unit length, exactly as the paper's reference code computes it.

Like `diffgen.metrics.frechet`, the kernels are pure functions of two (N, D) arrays; the backbone
that made the features and the sample sizes are copied onto every result. Kernel matrices are
never held whole: rows are summed in blocks of `BLOCK_ROWS`, so 10,000-image samples fit in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

# Rows of a kernel matrix computed at once: BLOCK_ROWS x 10,000 float64 is 80 MB.
BLOCK_ROWS = 1024

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


class KernelDistanceError(ValueError):
    """Samples a kernel distance cannot be computed from; the message says which and why."""


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel, (x·y / d + 1)³, for every pair of rows."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def gaussian_kernel(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA) -> np.ndarray:
    """exp(-|x - y|² / 2σ²) for every pair of rows."""
    sq = (x * x).sum(axis=1)[:, None] + (y * y).sum(axis=1)[None, :] - 2.0 * (x @ y.T)
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * sigma * sigma))


def _checked(name: str, a: np.ndarray, minimum: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise KernelDistanceError(f"{name} features must be an (N, D) array, got shape {a.shape}")
    if a.shape[0] < minimum:
        raise KernelDistanceError(f"needs at least {minimum} {name} samples, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise KernelDistanceError(f"{name} features contain NaN or Inf")
    return a


def _row_sums(x: np.ndarray, y: np.ndarray, kernel: Kernel, *, same: bool) -> np.ndarray:
    """Σ_j k(x_i, y_j) for every i; with `same` (y is x), the diagonal k(x_i, x_i) is left out."""
    sums = np.empty(x.shape[0])
    for start in range(0, x.shape[0], BLOCK_ROWS):
        block = kernel(x[start : start + BLOCK_ROWS], y)
        if same:
            rows = np.arange(block.shape[0])
            block[rows, rows + start] = 0.0
        sums[start : start + block.shape[0]] = block.sum(axis=1)
    return sums


def _col_sums(x: np.ndarray, y: np.ndarray, kernel: Kernel) -> tuple[np.ndarray, np.ndarray]:
    """(Σ_j k(x_i, y_j) for every i, Σ_i k(x_i, y_j) for every j) in one pass over the blocks."""
    rows, cols = np.empty(x.shape[0]), np.zeros(y.shape[0])
    for start in range(0, x.shape[0], BLOCK_ROWS):
        block = kernel(x[start : start + BLOCK_ROWS], y)
        rows[start : start + block.shape[0]] = block.sum(axis=1)
        cols += block.sum(axis=0)
    return rows, cols


@dataclass(frozen=True)
class KernelDistance:
    """One kernel distance with what it was measured on; `standard_error` is None for CMMD."""

    metric: str
    value: float
    standard_error: float | None
    backbone: str
    count: int
    reference_count: int

    def to_dict(self) -> dict[str, float | str | int | None]:
        return asdict(self)


def kid_estimate(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(unbiased MMD², its jackknife standard error) under KID's kernel, for samples of at least 3 rows."""
    x, y = _checked("generated", x, 3), _checked("reference", y, 3)
    if x.shape[1] != y.shape[1]:
        raise KernelDistanceError(f"features of different dimensions: {x.shape[1]} vs {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    rxx = _row_sums(x, x, polynomial_kernel, same=True)
    ryy = _row_sums(y, y, polynomial_kernel, same=True)
    rxy, cxy = _col_sums(x, y, polynomial_kernel)
    sxx, syy, sxy = rxx.sum(), ryy.sum(), rxy.sum()
    value = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)
    # Leaving x_i out removes its row and column of Kxx (2 r_i off the off-diagonal sum) and its row of Kxy.
    loo_x = (sxx - 2 * rxx) / ((m - 1) * (m - 2)) + syy / (n * (n - 1)) - 2.0 * (sxy - rxy) / ((m - 1) * n)
    loo_y = sxx / (m * (m - 1)) + (syy - 2 * ryy) / ((n - 1) * (n - 2)) - 2.0 * (sxy - cxy) / (m * (n - 1))
    variance = (m - 1) / m * ((loo_x - loo_x.mean()) ** 2).sum() + (n - 1) / n * ((loo_y - loo_y.mean()) ** 2).sum()
    return float(value), float(np.sqrt(variance))


def kid(x: np.ndarray, y: np.ndarray, *, backbone: str) -> KernelDistance:
    """KID of generated features `x` against reference features `y` (same backbone), with its standard error."""
    value, se = kid_estimate(x, y)
    return KernelDistance("kid", value, se, backbone, int(np.shape(x)[0]), int(np.shape(y)[0]))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length, as CMMD's reference code does to CLIP embeddings (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def cmmd_estimate(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """scale x the biased MMD² under a Gaussian kernel, on unit-length rows of `x` and `y`."""
    x, y = _checked("generated", x, 1), _checked("reference", y, 1)
    if x.shape[1] != y.shape[1]:
        raise KernelDistanceError(f"features of different dimensions: {x.shape[1]} vs {y.shape[1]}")
    x, y = unit_rows(x), unit_rows(y)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return gaussian_kernel(a, b, sigma)

    m, n = x.shape[0], y.shape[0]
    kxx = _row_sums(x, x, kernel, same=False).sum() / (m * m)
    kyy = _row_sums(y, y, kernel, same=False).sum() / (n * n)
    kxy = _row_sums(x, y, kernel, same=False).sum() / (m * n)
    return float(scale * (kxx + kyy - 2.0 * kxy))


def cmmd(x: np.ndarray, y: np.ndarray, *, backbone: str) -> KernelDistance:
    """CMMD of generated CLIP embeddings `x` against reference embeddings `y` (same CLIP weights)."""
    return KernelDistance("cmmd", cmmd_estimate(x, y), None, backbone, int(np.shape(x)[0]), int(np.shape(y)[0]))
