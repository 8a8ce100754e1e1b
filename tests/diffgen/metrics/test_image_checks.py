"""Per-image checks: golden pHash values (from the imagehash package), duplicates, black and flat images."""

import io

import numpy as np
import pytest
from PIL import Image

from diffgen.metrics.image_checks import (
    check_images,
    hamming,
    is_black,
    near_duplicates,
    non_finite,
    phash,
    pixel_std,
    reference_duplicates,
)


def _noise(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_phash_golden_values_match_imagehash():
    # Values printed by imagehash 4.3.2: str(imagehash.phash(Image.fromarray(x))).
    half = np.zeros((64, 64, 3), np.uint8)
    half[:, :32] = 255
    assert phash(half) == 0xC400000000000000
    assert phash(_noise(42)) == 0xFEF21A053FEE4220


def test_phash_survives_resizing_and_recompression(make_images):
    image = make_images(1, seed=0, size=(128, 128))[0]
    resized = np.asarray(Image.fromarray(image).resize((96, 96), Image.Resampling.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=80)
    jpeg = np.asarray(Image.open(buf).convert("RGB"))
    h = phash(image)
    assert hamming(h, phash(resized)) <= 4
    assert hamming(h, phash(jpeg)) <= 4
    others = [phash(x) for x in make_images(10, seed=1, size=(128, 128))]
    assert min(hamming(h, o) for o in others) > 10


def test_hamming():
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(0, 2**64 - 1) == 64


def test_near_duplicates_point_at_the_earliest_close_image():
    a, b = 0, 0xFFFF_FFFF_0000_0000
    hashes = [a, b, a ^ 0b111, b ^ 0b1, a ^ 0xFF, b]
    # a^0xFF is 8 bits from a and 5 from a^0b111: over the limit of 4 for both, so it starts a cluster.
    assert near_duplicates(hashes, max_distance=4) == [-1, -1, 0, 1, -1, 1]
    assert near_duplicates(hashes, max_distance=0) == [-1, -1, -1, -1, -1, 1]
    assert near_duplicates([], max_distance=4) == []


def test_reference_duplicates_find_the_closest_reference():
    reference = [0, 0xFF00, 0xFFFF_0000_0000_0000]
    hashes = [0b1, 0xFF01, 0xFFFF_0000_0000_0003, 0x00FF_FF00_00FF_0000]
    assert reference_duplicates(hashes, reference, max_distance=2) == [0, 1, 2, -1]
    assert reference_duplicates(hashes, [], max_distance=2) == [-1, -1, -1, -1]
    with pytest.raises(ValueError, match="hash 0 is not a 64-bit"):
        reference_duplicates([-1], reference, max_distance=2)


def test_generated_near_copies_are_found(make_images):
    images = make_images(6, seed=3, size=(64, 64))
    images.append(np.clip(images[2].astype(int) + 3, 0, 255).astype(np.uint8))  # a brightened copy of 2
    hashes = [c.phash for c in check_images(images, black_level=0, flat_std=1.0)]
    assert near_duplicates(hashes, max_distance=6) == [-1, -1, -1, -1, -1, -1, 2]


def test_black_and_flat():
    black = np.zeros((16, 16, 3), np.uint8)
    nearly = np.full((16, 16, 3), 3, np.uint8)
    grey = np.full((16, 16, 3), 128, np.uint8)
    assert is_black(black) and not is_black(nearly) and is_black(nearly, max_level=5)
    assert pixel_std(grey) == 0.0
    checker = np.zeros((16, 16, 3), np.uint8)
    checker[::2, ::2] = checker[1::2, 1::2] = 255
    assert pixel_std(checker) == 127.5  # half the pixels 0, half 255
    checks = check_images([black, grey, _noise(1)], black_level=5, flat_std=2.0)
    assert [(c.black, c.flat) for c in checks] == [(True, True), (False, True), (False, False)]


def test_non_finite_only_for_floats():
    x = np.zeros((4, 4, 3), np.float32)
    assert not non_finite(x)
    x[1, 1, 0] = np.inf
    assert non_finite(x)
    assert not non_finite(np.zeros((4, 4, 3), np.uint8))


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match=r"image 0: expected an \(H, W, 3\) uint8 RGB array, got float32"):
        check_images([np.zeros((4, 4, 3), np.float32)], black_level=0, flat_std=1.0)
    with pytest.raises(ValueError, match="image 0"):
        check_images([np.zeros((4, 4), np.uint8)], black_level=0, flat_std=1.0)
