"""CLIP score with a tiny real CLIP folder: range, determinism, batch invariance, truncation."""

import numpy as np
import pytest

from diffgen.metrics.clip_score import ClipScorer, clip_score_kernel

TOL = 1e-4  # score points; float32 towers agree to ~1e-6 across batch compositions


@pytest.fixture(scope="module")
def scorer(clip_model):
    return ClipScorer(clip_model)


PROMPTS = ["a red circle", "", "a photo of a cat on a mat", "zzz", "two dogs", "a very long prompt " * 10]


def test_kernel_golden_values():
    img = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    txt = np.array([[1.0, 0.0], [-1.0, 0.0], [4.0, 3.0], [1.0, 1.0]])
    # cos = 1, -1 (clamped to 0), 24/25, and 0 for a zero embedding rather than NaN.
    np.testing.assert_allclose(clip_score_kernel(img, txt), [100.0, 0.0, 96.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        clip_score_kernel(img, txt[:2])


def test_scores_are_in_range_and_deterministic(scorer, make_images, tiny_clip):
    images = make_images(len(PROMPTS), seed=0)
    first = scorer.score(images, PROMPTS)
    assert first.shape == (len(PROMPTS),) and first.dtype == np.float64
    assert ((first >= 0) & (first <= 100)).all()
    # Random weights still give different cosines for different pairs: the scores are not constant.
    assert np.ptp(first) > 1.0
    np.testing.assert_allclose(scorer.score(images, PROMPTS), first, rtol=0, atol=TOL)
    # A second load of the same folder scores the same.
    np.testing.assert_allclose(ClipScorer.load(tiny_clip).score(images, PROMPTS), first, rtol=0, atol=TOL)


def test_a_pair_scores_the_same_in_any_batch(scorer, make_images):
    images = make_images(len(PROMPTS), seed=1)
    together = scorer.score(images, PROMPTS)  # batch_size 4: chunks of 4 and 2
    alone = np.array([scorer.score([im], [p])[0] for im, p in zip(images, PROMPTS)])
    reversed_ = scorer.score(images[::-1], PROMPTS[::-1])[::-1]
    np.testing.assert_allclose(alone, together, rtol=0, atol=TOL)
    np.testing.assert_allclose(reversed_, together, rtol=0, atol=TOL)


def test_images_of_any_size_are_scored(scorer, make_images):
    images = make_images(1, seed=2, size=(64, 64)) + make_images(1, seed=3, size=(17, 90))
    assert scorer.score(images, ["a", "b"]).shape == (2,)


def test_long_prompts_are_truncated_and_flagged(scorer, make_images):
    image = make_images(1, seed=4)
    limit = scorer.clip.max_length - 2  # the byte-level tokenizer: one token per byte, plus start and end
    fits, over, far_over = "a" * limit, "a" * limit + "b", "a" * limit + "b" * 500
    np.testing.assert_array_equal(scorer.truncated([fits, over, far_over, ""]), [False, True, True, False])
    # What is past the limit is never seen: both long prompts score as their common start,
    # while a change inside the limit does change the score.
    inside = "a" * (limit - 1) + "b"
    s = scorer.score(image * 4, [fits, over, far_over, inside])
    assert s[1] == pytest.approx(s[2], abs=TOL)
    assert abs(s[3] - s[0]) > 10 * TOL


def test_bad_input_is_refused(scorer, make_images):
    images = make_images(2, seed=5)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.score(images, ["one"])
    with pytest.raises(ValueError, match=r"image 1: expected an \(H, W, 3\) uint8"):
        scorer.score([images[0], images[1].astype(np.float32)], ["a", "b"])
    with pytest.raises(ValueError, match="prompt 0: expected a str, got NoneType"):
        scorer.score(images[:1], [None])


def test_the_name_records_the_weights(scorer, tiny_clip, tmp_path):
    from lab.builders.tiny_clip import build_tiny_clip

    assert scorer.name.startswith(f"clip:{tiny_clip.name}@") and len(scorer.name.split("@")[1]) == 12
    other = ClipScorer.load(build_tiny_clip(tmp_path / "tiny-clip", seed=1))
    assert other.name.split("@")[1] != scorer.name.split("@")[1]
