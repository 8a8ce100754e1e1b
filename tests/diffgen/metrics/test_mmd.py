"""KID and CMMD against independent numpy references on fixed features (whole kernel matrices, explicit sums)."""

import numpy as np
import pytest

from diffgen.metrics import mmd
from diffgen.metrics.mmd import KernelDistanceError, cmmd, cmmd_estimate, kid, kid_estimate


def _features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    return shift + np.random.default_rng(seed).normal(size=(n, d))


def _reference_kid(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())  # fmt: skip


def _reference_jackknife_se(x: np.ndarray, y: np.ndarray) -> float:
    """The two-sample jackknife by brute force: recompute the estimate with each row left out."""
    loo_x = np.array([_reference_kid(np.delete(x, i, 0), y) for i in range(len(x))])
    loo_y = np.array([_reference_kid(x, np.delete(y, j, 0)) for j in range(len(y))])
    m, n = len(x), len(y)
    return float(np.sqrt((m - 1) / m * ((loo_x - loo_x.mean()) ** 2).sum()
                         + (n - 1) / n * ((loo_y - loo_y.mean()) ** 2).sum()))  # fmt: skip


def _reference_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """google-research/cmmd's `mmd` on unit-length embeddings, written out."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    gamma = 1 / (2 * 10.0**2)

    def k(a, b):
        return np.exp(-gamma * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    return 1000 * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


def test_kid_matches_the_reference_and_its_jackknife(monkeypatch):
    monkeypatch.setattr(mmd, "BLOCK_ROWS", 7)  # blocks that do not divide the rows
    x, y = _features(0, 40, 6), _features(1, 33, 6, shift=1.0)
    value, se = kid_estimate(x, y)
    assert value == pytest.approx(_reference_kid(x, y), abs=1e-6)
    assert se == pytest.approx(_reference_jackknife_se(x, y), abs=1e-6)
    assert value > 2 * se > 0  # shifted sets are told apart


def test_kid_is_near_zero_for_one_distribution_and_carries_its_mode():
    x, y = _features(2, 300, 8), _features(3, 300, 8)
    result = kid(x, y, backbone="pixels-16")
    assert abs(result.value) < 3 * result.standard_error
    assert (result.metric, result.backbone, result.count, result.reference_count) == ("kid", "pixels-16", 300, 300)


def test_cmmd_matches_the_reference(monkeypatch):
    monkeypatch.setattr(mmd, "BLOCK_ROWS", 5)
    x, y = _features(4, 30, 5), _features(5, 21, 5, shift=0.7)
    assert cmmd_estimate(x, y) == pytest.approx(_reference_cmmd(x, y), abs=1e-6)
    assert cmmd_estimate(x, x) == pytest.approx(0.0, abs=1e-9)
    result = cmmd(x, y, backbone="clip:micro@0")
    assert result.standard_error is None and result.count == 30


def test_bad_samples_are_refused_by_name():
    with pytest.raises(KernelDistanceError, match="at least 3 generated"):
        kid_estimate(_features(0, 2, 4), _features(1, 10, 4))
    with pytest.raises(KernelDistanceError, match="different dimensions"):
        cmmd_estimate(_features(0, 5, 4), _features(1, 5, 3))
    bad = _features(0, 5, 4)
    bad[2, 1] = np.nan
    with pytest.raises(KernelDistanceError, match="reference features contain NaN"):
        kid_estimate(_features(0, 5, 4), bad)
