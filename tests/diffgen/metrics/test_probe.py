"""The linear probe, scores and bootstrap: ~100 % on separable features, chance on shuffled labels."""

import numpy as np
import pytest

from diffgen.metrics.bootstrap import interval, stratified_resamples
from diffgen.metrics.classification import confusion, scores
from diffgen.metrics.probe import ProbeError, fit_probe

CLASSES = ("a", "b", "c", "d")


def _toy(n_per_class: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[: len(CLASSES)] * 3
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, 8)) for c in centres])
    return x, [c for c in CLASSES for _ in range(n_per_class)]


def test_separable_features_are_learned():
    x, y = _toy(50, 0)
    probe = fit_probe(x, y, CLASSES)
    tx, ty = _toy(50, 1)
    predicted = probe.predict(tx)
    assert (predicted == np.array([CLASSES.index(v) for v in ty])).mean() == 1.0
    # Deterministic: the same optimum again.
    assert np.array_equal(fit_probe(x, y, CLASSES).weight, probe.weight)


def test_shuffled_labels_give_chance():
    # Labels shuffled apart from the features, in training and in testing: nothing to learn.
    rng = np.random.default_rng(3)
    x, y = _toy(100, 2, spread=1.0)
    probe = fit_probe(x, list(rng.permutation(y)), CLASSES)
    tx, ty = _toy(500, 4, spread=1.0)
    accuracy = (probe.predict(tx) == np.array([CLASSES.index(v) for v in rng.permutation(ty)])).mean()
    assert abs(accuracy - 1 / len(CLASSES)) < 0.05  # 2000 test rows: chance +- 2.6 standard errors


def test_bad_training_sets_are_refused():
    x, y = _toy(5, 0)
    with pytest.raises(ProbeError, match="at least 2 classes"):
        fit_probe(x[:5], y[:5], CLASSES)
    with pytest.raises(ProbeError, match="not among the classes"):
        fit_probe(x, ["z"] * len(y), CLASSES)


def test_scores_from_a_known_confusion():
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    m = confusion(truth, predicted, 3)
    assert m.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    s = scores(m)
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.class_accuracy.tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    # F1: a 2*2/(3+3)=0.667, b 2*2/(2+3)=0.8, c 0 -> macro 0.489
    assert s.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    batch = confusion(np.stack([truth, truth]), np.stack([predicted, truth]), 3)
    assert scores(batch).accuracy.tolist() == pytest.approx([4 / 6, 1.0])


def test_stratified_resamples_keep_class_sizes_and_are_seeded():
    labels = np.array([0, 0, 0, 1, 1, 2])
    boot = stratified_resamples(labels, 200, seed=1)
    assert boot.shape == (200, 6)
    assert all(np.bincount(labels[row], minlength=3).tolist() == [3, 2, 1] for row in boot)
    assert np.array_equal(boot, stratified_resamples(labels, 200, seed=1))
    lo, hi = interval(np.arange(1001.0))
    assert (lo, hi) == pytest.approx((25.0, 975.0))
    assert interval(np.array([np.nan])) == (None, None)
