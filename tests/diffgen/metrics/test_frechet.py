"""The Fréchet kernel and mergeable feature statistics, against golden values and an independent route."""

import numpy as np
import pytest

from diffgen.metrics.frechet import FeatureStats, FeatureStatsError, FrechetReference, fid, frechet_distance


def _features(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, like a real backbone's
    return shift + scale * rng.normal(size=(n, d)) @ mixing


def _independent_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Tr((S1 S2)^½) from the eigenvalues of S1^½ S2 S1^½ (symmetric PSD): no sqrtm involved."""
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _stats(x: np.ndarray) -> FeatureStats:
    return FeatureStats("test", "none", x.shape[1]).update(x)


def test_one_dimension_is_the_closed_form():
    # For 1-D Gaussians d² = (m1 - m2)² + (s1 - s2)² with s the standard deviations.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, abs=1e-12)


def test_diagonal_covariances_are_the_closed_form():
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 0.0 + 4.0 + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()  # = 5 + 4 + 1 + 0
    assert expected == 10.0
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(10.0, abs=1e-10)


def test_matches_an_independent_computation_on_seeded_features():
    x, y = _features(0, 400, 16), _features(1, 300, 16, shift=0.3, scale=1.5)
    ours = fid(_stats(x), _stats(y)).value
    assert ours == pytest.approx(_independent_fid(x, y), abs=1e-6)
    # Golden value for these seeded arrays (numpy's PCG64 streams are stable across versions).
    assert ours == pytest.approx(14.616990549, abs=1e-6)


def test_a_set_against_itself_is_zero():
    x = _features(2, 300, 24, shift=5.0, scale=3.0)
    stats = _stats(x)
    result = fid(stats, stats)
    assert abs(result.value) < 1e-6 * np.trace(stats.covariance)
    assert not result.rank_deficient


def test_four_shards_merge_to_the_whole():
    x = _features(3, 1000, 32, shift=2.0)
    shards = [_stats(part) for part in np.array_split(x, 4)]
    merged = shards[0].merge(shards[1]).merge(shards[2].merge(shards[3]))
    whole = _stats(x)
    assert merged.count == 1000
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(merged.covariance, whole.covariance, rtol=0, atol=1e-9)
    np.testing.assert_allclose(whole.covariance, np.cov(x, rowvar=False), rtol=0, atol=1e-9)
    np.testing.assert_allclose(whole.mean, x.mean(axis=0), rtol=0, atol=1e-12)


def test_update_in_batches_equals_one_update():
    x = _features(4, 50, 8)
    batched = FeatureStats("test", "none", 8)
    for part in np.array_split(x, 7):
        batched.update(part)
    np.testing.assert_allclose(batched.covariance, _stats(x).covariance, rtol=0, atol=1e-12)


def test_merge_refuses_other_modes():
    a = FeatureStats("pixels-16", "pil-bicubic-16x16", 8)
    with pytest.raises(FeatureStatsError, match="different modes"):
        a.merge(FeatureStats("pixels-16", "pil-bicubic-16x16", 9))
    with pytest.raises(FeatureStatsError, match="different modes"):
        a.merge(FeatureStats("clip:x@1", "pil-bicubic-16x16", 8))
    with pytest.raises(FeatureStatsError, match="different modes"):
        fid(_stats(_features(0, 20, 8)), FeatureStats("other", "none", 8).update(_features(1, 20, 8)))


def test_bad_features_are_refused():
    stats = FeatureStats("test", "none", 4)
    with pytest.raises(FeatureStatsError, match=r"shape \(N, 4\)"):
        stats.update(np.zeros((3, 5)))
    bad = np.zeros((3, 4))
    bad[1, 2] = np.nan
    with pytest.raises(FeatureStatsError, match=r"rows \[1\]"):
        stats.update(bad)
    assert stats.count == 0


def test_too_few_samples_raise_and_small_sets_are_flagged():
    one = FeatureStats("test", "none", 4).update(np.ones((1, 4)))
    many = _stats(_features(5, 50, 4))
    with pytest.raises(FeatureStatsError, match="at least 2 generated images, got 1"):
        fid(one, many)
    with pytest.raises(FeatureStatsError, match="at least 2"):
        one.covariance
    with pytest.raises(FeatureStatsError, match="empty"):
        FeatureStats("test", "none", 4).mean

    # N <= D: a singular covariance; the value is finite and flagged, never NaN.
    small = _stats(_features(6, 10, 16))
    result = fid(small, _stats(_features(7, 12, 16, shift=1.0)))
    assert result.rank_deficient and np.isfinite(result.value) and result.value > 0
    assert fid(many, many).rank_deficient is False


def test_kernel_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="sigma2 contains NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.nan))
    # Not a covariance: a negative-definite product has a truly imaginary square root.
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))


def test_bytes_round_trip_keeps_mode_and_sums():
    stats = FeatureStats("clip:tiny@abc", "pil-bicubic-shortest-32-crop-32x32", 6).update(_features(8, 9, 6))
    back = FeatureStats.from_bytes(stats.to_bytes())
    assert (back.backbone, back.resize, back.dim, back.count) == (stats.backbone, stats.resize, 6, 9)
    np.testing.assert_array_equal(back.outer, stats.outer)
    np.testing.assert_array_equal(back.total, stats.total)


def test_damaged_bytes_are_refused():
    with pytest.raises(FeatureStatsError, match="not a feature statistics file"):
        FeatureStats.from_bytes(b"not an npz")
    import io

    buf = io.BytesIO()
    np.savez(buf, mu=np.zeros(3))
    with pytest.raises(FeatureStatsError, match="expected format"):
        FeatureStats.from_bytes(buf.getvalue())


def test_result_records_the_mode():
    a, b = _stats(_features(9, 30, 4)), _stats(_features(10, 40, 4))
    record = fid(a, b).to_dict()
    assert record == {
        "value": pytest.approx(_independent_fid(_features(9, 30, 4), _features(10, 40, 4)), abs=1e-6),
        "backbone": "test",
        "resize": "none",
        "dim": 4,
        "count": 30,
        "reference_count": 40,
        "rank_deficient": False,
    }


@pytest.mark.parametrize("n_ref, n", [(400, 300), (40, 25), (400, 3)])
def test_a_prepared_reference_gives_the_sqrtm_kernels_value(n_ref, n):
    d = 32
    ref = _stats(_features(1, n_ref, d))
    prepared = FrechetReference(ref)
    for seed, shift in ((2, 0.0), (3, 0.5)):
        stats = _stats(_features(seed, n, d, shift=shift, scale=1.2))
        got, want = prepared.fid(stats), fid(stats, ref)
        assert got.value == pytest.approx(want.value, rel=1e-6, abs=1e-9)
        assert (got.count, got.reference_count, got.rank_deficient) == (
            want.count,
            want.reference_count,
            want.rank_deficient,
        )
    assert prepared.fid(ref).value == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(FeatureStatsError, match="different modes"):
        prepared.fid(FeatureStats("other", "none", d).update(_features(4, 5, d)))
