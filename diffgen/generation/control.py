"""ControlNet preprocessors: turn a decoded input image into the conditioning image a ControlNet expects.

Each is a pure function of (image, settings). The pipeline itself then resizes the
result to the target size with its own image processor, as diffusers does.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from diffgen.schemas.job import PREPROCESSOR_NAMES, ControlNetSpec


def identity(image: Image.Image, spec: ControlNetSpec) -> Image.Image:
    """The image as given: for control maps made ahead of time (edges, depth, pose)."""
    return image


def canny(image: Image.Image, spec: ControlNetSpec) -> Image.Image:
    """Canny edges (Canny 1986) of the grey image, white on black in three channels.

    The form the Stable Diffusion canny ControlNets were trained on.
    """
    grey = np.asarray(image.convert("L"))
    edges = cv2.Canny(grey, spec.canny_low, spec.canny_high)
    return Image.fromarray(np.repeat(edges[:, :, None], 3, axis=2))


PREPROCESSORS: dict[str, Callable[[Image.Image, ControlNetSpec], Image.Image]] = {
    "none": identity,
    "canny": canny,
}


def preprocess(image: Image.Image, spec: ControlNetSpec) -> Image.Image:
    if spec.preprocessor not in PREPROCESSORS:
        raise ValueError(f"Unknown preprocessor '{spec.preprocessor}'. Choose from: {', '.join(PREPROCESSOR_NAMES)}")
    return PREPROCESSORS[spec.preprocessor](image, spec)
