"""Outline perturbations for the judge keep a shape's place, size and label, and change its outline."""

import numpy as np
import torch

from lab.micro.outlines import PERTURBATIONS, perturbed_coverage, perturbed_renders
from lab.micro.world import Scene, coverage


def _centre(alpha: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(alpha >= 0.5)
    return np.array([xs.mean(), ys.mean()])


def test_each_perturbation_keeps_the_shape_in_place_and_about_its_area():
    scenes = [Scene(shape, "red", "large", "top left", "blue") for shape in ("circle", "square", "triangle", "star")]
    for kind in PERTURBATIONS:
        out = perturbed_coverage(scenes, [kind] * len(scenes), np.random.default_rng(3)).numpy()[:, 0]
        for scene, alpha in zip(scenes, out):
            exact = coverage(scene, 64)
            assert 0.7 < (alpha >= 0.5).sum() / (exact >= 0.5).sum() < 1.3, (kind, scene.shape)
            assert np.abs(_centre(alpha) - _centre(exact)).max() < 3.0, (kind, scene.shape)


def test_none_is_the_exact_render_and_the_others_change_the_outline():
    scene = Scene("square", "red", "large", "center", "blue")
    exact = torch.from_numpy(coverage(scene, 64))
    for kind in PERTURBATIONS:
        out = perturbed_coverage([scene], [kind], np.random.default_rng(5))[0, 0]
        changed = (out >= 0.5) != (exact >= 0.5)
        assert changed.sum() == 0 if kind == "none" else changed.sum() >= 4, kind


def test_rounded_corners_take_coverage_from_a_squares_corners_only():
    scene = Scene("square", "red", "large", "center", "blue")
    exact = coverage(scene, 64)
    ys, xs = np.nonzero(exact >= 0.5)
    corner = (slice(ys.min(), ys.min() + 3), slice(xs.min(), xs.min() + 3))
    side = (slice(ys.min(), ys.max() + 1), (xs.min() + xs.max()) // 2)
    for seed in range(5):
        rounded = perturbed_coverage([scene], ["rounded"], np.random.default_rng(seed)).numpy()[0, 0]
        assert rounded[corner].sum() < exact[corner].sum() - 0.5, seed
        assert np.abs(rounded[side] - exact[side]).max() < 0.05, seed


def test_renders_are_painted_in_the_scenes_colours_in_model_range():
    scenes = [Scene("star", "yellow", "small", "bottom", "black")]
    images, kinds = perturbed_renders(scenes, np.random.default_rng(0))
    assert images.shape == (1, 3, 64, 64) and kinds[0] in PERTURBATIONS
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert torch.allclose(images[0, :, 0, 0], torch.tensor([20, 20, 20]) / 127.5 - 1.0)
