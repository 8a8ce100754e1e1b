"""Percentile bootstrap intervals over a test set, stratified by class (Efron and Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13).

Each resample draws, within every class, as many test rows as the class has, with replacement, so
every class keeps its size and its per-class scores stay defined. Resampling the same rows for every
model under comparison (a paired bootstrap) makes the intervals of differences and ratios between
models tight where the models agree. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


def stratified_resamples(labels: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, N) row indices into `labels`, each row keeping every class's count."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    columns = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        columns.append(members[rng.integers(0, members.size, size=(resamples, members.size))])
    return np.concatenate(columns, axis=1) if columns else np.zeros((resamples, 0), dtype=np.int64)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float | None, float | None]:
    """The central `level` percentile interval of the finite values along the first axis (None if none)."""
    x = np.asarray(samples, np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return None, None
    lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
