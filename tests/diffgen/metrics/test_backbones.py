"""Named FID backbones: the table, the weightless pixels backbone, CLIP from a tiny real folder, Inception's refusal."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from diffgen.metrics.backbones import (
    BACKBONES,
    INCEPTION_WEIGHTS_FILE,
    BackboneError,
    ClipBackbone,
    PixelBackbone,
    load_backbone,
)
from diffgen.metrics.frechet import FeatureStats, fid


def test_unknown_backbone_lists_the_table():
    with pytest.raises(BackboneError, match="Unknown backbone 'inception'. Choose from: pixels-16, clip, inception-v3-pt"):
        load_backbone("inception")
    assert set(BACKBONES) == {"pixels-16", "clip", "inception-v3-pt"}


def test_pixels_backbone_is_pil_bicubic_pixels():
    backbone = load_backbone("pixels-16")
    assert (backbone.name, backbone.resize, backbone.dim) == ("pixels-16", "pil-bicubic-antialias-16x16", 768)
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    features = backbone.extract([image, image[:16, :16]])
    assert features.shape == (2, 768) and features.dtype == np.float64
    expected = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BICUBIC), np.float64).ravel() / 255
    np.testing.assert_array_equal(features[0], expected)
    np.testing.assert_array_equal(features[1], image[:16, :16].astype(np.float64).ravel() / 255)  # no-op resize
    assert backbone.extract([]).shape == (0, 768)
    with pytest.raises(BackboneError, match="needs no weights"):
        load_backbone("pixels-16", path="/some/file")


def test_pixel_fid_tells_different_sets_apart(make_images):
    # 4x4 pixels (48-d) keeps sqrtm instant; pixels-16 is the same class at 768-d.
    backbone = PixelBackbone(4)

    def stats(images):
        return FeatureStats(backbone.name, backbone.resize, backbone.dim).update(backbone.extract(images))

    a, b = stats(make_images(60, seed=1)), stats(make_images(60, seed=2))
    dark = stats([(x // 3).astype(np.uint8) for x in make_images(60, seed=3)])
    same, darker = fid(a, b), fid(a, dark)
    assert not same.rank_deficient
    assert 0 < same.value < darker.value / 10
    assert (darker.backbone, darker.resize) == ("pixels-4", "pil-bicubic-antialias-4x4")
    few = fid(stats(make_images(20, seed=4)), a)
    assert few.rank_deficient and np.isfinite(few.value)


def test_clip_backbone_extracts_projected_embeddings(tiny_clip, clip_model, make_images):
    backbone = load_backbone("clip", path=str(tiny_clip))
    assert backbone.name == clip_model.name and backbone.name.startswith("clip:tiny-clip@")
    assert backbone.resize == "pil-bicubic-shortest-32-crop-32x32" and backbone.dim == 16
    images = make_images(5, seed=4, size=(64, 48))
    features = backbone.extract(images)
    assert features.shape == (5, 16) and features.dtype == np.float64
    # One image alone gives the same features as within a batch; a shared model gives the same as a fresh load.
    np.testing.assert_allclose(backbone.extract(images[3:4])[0], features[3], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ClipBackbone(clip_model).extract(images), features, rtol=0, atol=1e-5)
    assert np.linalg.norm(features[0] - features[1]) > 1e-3
    with pytest.raises(BackboneError, match="needs a path: a local CLIP model folder"):
        load_backbone("clip")


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_inception_explains_what_it_needs(tmp_path):
    with pytest.raises(BackboneError) as err:
        load_backbone("inception-v3-pt")
    message = str(err.value)
    assert INCEPTION_WEIGHTS_FILE in message and "install torch-fidelity" in message and "pixels-16" in message
    with pytest.raises(BackboneError, match=r"weights file .*missing.pth does not exist"):
        load_backbone("inception-v3-pt", path=str(tmp_path / "missing.pth"))
