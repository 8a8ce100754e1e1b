"""ControlNet preprocessors as pure functions of (image, settings)."""

import numpy as np
from PIL import Image

from diffgen.generation.control import PREPROCESSORS, preprocess
from diffgen.schemas.job import PREPROCESSOR_NAMES, ControlNetSpec


def _spec(**kw) -> ControlNetSpec:
    return ControlNetSpec(name="c", model={"id": "m"}, **kw)


def _soft_square() -> Image.Image:
    """A bright square with a hard edge next to a faint ramp (edges of strength ~4 per pixel)."""
    pixels = np.zeros((32, 32), np.uint8)
    pixels[8:24, 8:24] = 200
    pixels[:, 26:] = np.arange(6, dtype=np.uint8) * 4
    return Image.fromarray(pixels).convert("RGB")


def test_every_preprocessor_name_has_a_function():
    assert set(PREPROCESSORS) == set(PREPROCESSOR_NAMES)


def test_none_passes_the_image_through():
    image = _soft_square()
    assert preprocess(image, _spec()) is image


def test_canny_finds_the_square_outline_as_white_on_black_rgb():
    edges = np.asarray(preprocess(_soft_square(), _spec(preprocessor="canny")))
    assert edges.shape == (32, 32, 3) and set(np.unique(edges)) <= {0, 255}
    assert (edges[..., 0] == edges[..., 1]).all()
    assert edges[8:24, 7:9].any() and not edges[12:20, 12:20].any()  # the outline, not the inside


def test_canny_thresholds_decide_which_edges_count():
    image = _soft_square()
    strict = np.asarray(preprocess(image, _spec(preprocessor="canny", canny_low=100, canny_high=200)))
    loose = np.asarray(preprocess(image, _spec(preprocessor="canny", canny_low=1, canny_high=5)))
    assert not strict[:, 27:31].any()  # the faint ramp is below the strict thresholds
    assert loose[:, 27:31].any()
