"""Precision, recall, density and coverage against an independent numpy reference (the prdc package's
definitions written out on whole distance matrices)."""

import numpy as np
import pytest

from diffgen.metrics import prdc as prdc_module
from diffgen.metrics.prdc import ManifoldError, prdc


def _reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    real_r = np.sort(dist(real, real), axis=1)[:, k]
    fake_r = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)
    return {
        "precision": (d < real_r[:, None]).any(axis=0).mean(),
        "recall": (d < fake_r[None, :]).any(axis=1).mean(),
        "density": (1 / k) * (d < real_r[:, None]).sum(axis=0).mean(),
        "coverage": (d.min(axis=1) < real_r).mean(),
    }


@pytest.mark.parametrize("shift", [0.0, 0.8])
def test_matches_the_reference(monkeypatch, shift):
    monkeypatch.setattr(prdc_module, "BLOCK_ROWS", 9)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(60, 4)), shift + rng.normal(size=(45, 4))
    ours = prdc(fake, real, backbone="b").to_dict()
    for name, value in _reference(real, fake, 5).items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name
    assert (ours["k"], ours["count"], ours["reference_count"]) == (5, 45, 60)


def test_one_distribution_scores_high_and_a_far_one_zero():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 3))
    same = prdc(rng.normal(size=(400, 3)), real, backbone="b")
    assert same.precision > 0.8 and same.recall > 0.8 and same.coverage > 0.8
    far = prdc(10 + rng.normal(size=(50, 3)), real, backbone="b")
    assert (far.precision, far.recall, far.density, far.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_too_few_samples_for_k_are_refused():
    with pytest.raises(ManifoldError, match="more than 5 reference samples"):
        prdc(np.zeros((10, 2)), np.zeros((5, 2)), backbone="b")
