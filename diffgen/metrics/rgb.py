"""The image contract every metric takes: a sequence of (H, W, 3) uint8 RGB arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_rgb_batch(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The images as a list, or a ValueError naming the first one that breaks the contract.

    A wrong dtype or shape is a programming error upstream (a stage passing float pixels
    or a decoded grayscale file), so it raises rather than becoming a per-row status.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            if isinstance(image, np.ndarray):
                desc = f"{image.dtype} array of shape {image.shape}"
            else:
                desc = type(image).__name__
            raise ValueError(f"image {i}: expected an (H, W, 3) uint8 RGB array, got {desc}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image {i}: empty image of shape {image.shape}")
        out.append(image)
    return out
