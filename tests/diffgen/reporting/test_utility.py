"""The utility recipe on fixed features (no model): probes, split, intervals, and every bad input named."""

from datetime import UTC, datetime

import numpy as np
import pytest

from diffgen.metrics.reservoir import Reservoir
from diffgen.reporting.utility import RealFeatures, check_real_set, utility_report
from diffgen.schemas.job import JobSpecError
from diffgen.schemas.utility import UtilitySpec

CLASSES = ("circle", "square", "star")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _cluster(label: str, n: int, seed: int, spread: float) -> np.ndarray:
    centre = np.eye(6)[CLASSES.index(label) if label in CLASSES else 5] * 3
    return centre + spread * np.random.default_rng(seed).normal(size=(n, 6))


def _synthetic(n: int, spread: float = 0.5, labels=CLASSES) -> dict[str, Reservoir]:
    out = {}
    for k, label in enumerate(labels):
        r = Reservoir("clip:test@0", "pil", 6, capacity=10_000, seed=0)
        out[label] = r.update([f"{label}-{i}" for i in range(n)], _cluster(label, n, 100 + k, spread))
    return out


def _real(n: int, spread: float = 0.5, labels=CLASSES) -> RealFeatures:
    names, lab, feats = [], [], []
    for k, label in enumerate(labels):
        names += [f"real/{label}/{i}.png" for i in range(n)]
        lab += [label] * n
        feats.append(_cluster(label, n, k, spread))
    return RealFeatures(names, lab, np.concatenate(feats))


def test_synthetic_as_good_as_real_gives_a_ratio_near_one():
    spec = UtilitySpec(real="real", few_shot=5, resamples=200)
    report = utility_report(_synthetic(60), _real(40), spec, output="out", created_at=NOW)
    probes = {p.name: p for p in report.probes}
    assert probes["synthetic"].accuracy.value == 1.0 and probes["real"].accuracy.value == 1.0
    assert report.ratio.value == 1.0 and report.ratio.low <= 1.0 <= report.ratio.high
    assert report.test_images == {c: 20 for c in CLASSES}
    assert probes["real"].train_images == {c: 20 for c in CLASSES}  # capped by the pool (40 - 20 test)
    assert probes["few_shot"].train_images == {c: 5 for c in CLASSES}
    assert probes["few_shot_plus_synthetic"].train_images == {c: 65 for c in CLASSES}
    assert probes["synthetic"].confusion == [[20, 0, 0], [0, 20, 0], [0, 0, 20]]
    assert set(report.class_ratio) == set(CLASSES) and not report.warnings


def test_useless_synthetic_images_score_low_and_the_intervals_are_seeded():
    spec = UtilitySpec(real="real", few_shot=3, resamples=300, seed=4)
    synthetic = _synthetic(50)
    synthetic["circle"], synthetic["star"] = synthetic["star"], synthetic["circle"]  # labels swapped
    real = _real(30, spread=1.5)
    report = utility_report(synthetic, real, spec, output="out", created_at=NOW)
    assert report.ratio.value < 0.6 and report.ratio.high < 0.9
    assert report.augmentation_gain.value < 0
    assert report.class_gain["square"].low is not None
    again = utility_report(synthetic, real, spec, output="out", created_at=NOW)
    assert again.ratio == report.ratio and again.augmentation_gain == report.augmentation_gain


def test_labels_in_one_set_only_are_named_and_small_pools_warned():
    spec = UtilitySpec(real="real", few_shot=10, resamples=100)
    report = utility_report(_synthetic(20, labels=("circle", "square", "triangle")),
                            _real(8, labels=("circle", "square", "star")), spec, output="o", created_at=NOW)  # fmt: skip
    assert report.classes == ["circle", "square"]
    assert report.synthetic_only == ["triangle"] and report.real_only == ["star"]
    text = " | ".join(report.warnings)
    assert "['triangle']" in text and "['star']" in text and "class 'circle': 4 real training image(s)" in text


def test_no_overlap_is_an_error_naming_both_sides():
    spec = UtilitySpec(real="real", resamples=100)
    with pytest.raises(JobSpecError, match="labels do not overlap"):
        utility_report(_synthetic(10, labels=("a", "b")), _real(5), spec, output="o", created_at=NOW)


def _folders(root, counts: dict[str, int]):
    from PIL import Image

    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / label / f"{i}.png")
    return str(root)


def test_check_real_set_refuses_before_any_work(tmp_path):
    real = _folders(tmp_path / "real", {"circle": 3, "star": 1, "square": 2})
    spec = UtilitySpec(real=real)
    with pytest.raises(JobSpecError, match=r"qc.utility.real: too few .* 'star' \(1\)"):
        check_real_set(spec, {"circle", "star"})
    with pytest.raises(JobSpecError, match="qc.utility: the labels do not overlap"):
        check_real_set(spec, {"circle", "hexagon"})
    assert check_real_set(spec, {"circle", "square", "triangle"}).counts()["circle"] == 3
    one = _folders(tmp_path / "one", {"circle": 4})
    with pytest.raises(JobSpecError, match="holds 1 class"):
        check_real_set(UtilitySpec(real=one), None)
    with pytest.raises(JobSpecError, match="qc.utility.real: .*does not exist"):
        check_real_set(UtilitySpec(real=str(tmp_path / "nowhere")), None)


class _MeanColour:
    """An embedding that needs no model: each image's mean RGB (the split is what is under test)."""

    def image_embeddings(self, images):
        return np.stack([np.asarray(a, np.float64).mean(axis=(0, 1)) for a in images])


def test_the_same_real_set_elsewhere_is_split_the_same(tmp_path):
    from diffgen.reporting.utility import _split, embed_real

    here = _folders(tmp_path / "here", {"circle": 20, "star": 20})
    there = _folders(tmp_path / "a" / "copy" / "elsewhere", {"circle": 20, "star": 20})
    splits = []
    for root in (here, there):
        spec = UtilitySpec(real=root)
        test, pools = _split(embed_real(check_real_set(spec, None), _MeanColour()), ["circle", "star"], spec)
        splits.append((test.tolist(), {c: p.tolist() for c, p in pools.items()}))
    assert splits[0] == splits[1] and len(splits[0][0]) == 20
    # Hashing where the files lie would have split the two copies differently.
    from diffgen.metrics.labelled_set import open_labelled_set
    from diffgen.metrics.reservoir import sample_keys

    names = [open_labelled_set(r).names for r in (here, there)]
    assert not np.array_equal(np.argsort(sample_keys(names[0], 0)), np.argsort(sample_keys(names[1], 0)))
