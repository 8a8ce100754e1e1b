"""Fixtures for the metrics tests: a CLIP model on the session's tiny CLIP folder, and seeded images."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def clip_model(tiny_clip):
    from diffgen.metrics.clip_model import ClipModel

    return ClipModel(tiny_clip, batch_size=4)


def smooth_images(n: int, seed: int, size: tuple[int, int] = (48, 40)) -> list[np.ndarray]:
    """Seeded images with structure (blurred noise plus a gradient), unlike each other."""
    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 1, w)[None, :, None]
    images = []
    for _ in range(n):
        coarse = rng.uniform(0, 1, size=(h // 8 + 1, w // 8 + 1, 3))
        blurred = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
        images.append((255 * (0.7 * blurred + 0.3 * ramp * rng.uniform())).astype(np.uint8))
    return images


@pytest.fixture(scope="session")
def make_images():
    """`make_images(n, seed, size=(h, w))`: see smooth_images."""
    return smooth_images
