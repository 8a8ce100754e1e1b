"""KID / CMMD / precision-recall per group from seeded samples, as the QC report carries them."""

import numpy as np

from diffgen.metrics.mmd import cmmd_estimate, kid_estimate
from diffgen.metrics.reservoir import Reservoir
from diffgen.reporting.distribution import distribution_report
from diffgen.reporting.distribution_html import distribution_section


def _sample(backbone: str, n: int, seed: int, shift: float = 0.0) -> Reservoir:
    x = shift + np.random.default_rng(seed).normal(size=(n, 4))
    return Reservoir(backbone, "pil", 4, capacity=500, seed=0).update([f"{seed}-{i}" for i in range(n)], x)


def test_every_group_against_the_whole_reference_with_its_sizes():
    backbone = "clip:micro@1"
    samples = {"__all__": _sample(backbone, 60, 1), "a": _sample(backbone, 40, 2), "b": _sample(backbone, 4, 3)}
    reference = _sample(backbone, 50, 9, shift=0.5)
    report = distribution_report(samples, reference, "ref/")
    assert [g.group for g in report.groups] == ["__all__", "a", "b"]
    overall = report.groups[0]
    x, y = samples["__all__"].features, reference.features
    assert (overall.kid, overall.kid_standard_error) == kid_estimate(x, y)
    assert overall.cmmd == cmmd_estimate(x, y) and overall.precision is not None
    assert (overall.sample_count, overall.offered, report.reference_sample_count) == (60, 60, 50)
    small = report.groups[2]  # 4 rows: KID is defined, k-NN manifolds with k=5 are not
    assert small.kid is not None and small.precision is None and "more than 5" in small.note
    assert "KID ± s.e." in distribution_section(report)


def test_cmmd_only_on_clip_features():
    report = distribution_report({"__all__": _sample("pixels-16", 20, 1)}, _sample("pixels-16", 20, 2), "ref")
    assert report.groups[0].cmmd is None and "CLIP" in report.cmmd_note
