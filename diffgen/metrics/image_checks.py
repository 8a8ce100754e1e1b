"""Cheap per-image checks whose values become columns: non-finite, black, flat, perceptual hash, duplicates.

Thresholds are arguments (they come from the job config); nothing here decides what fails a row.

The perceptual hash is the DCT pHash as the `imagehash` package computes it (Zauner, 2010):
grayscale (PIL "L"), Lanczos resize to 32x32, 2-D DCT-II, the top-left 8x8 low frequencies
compared with their median, 64 bits read row by row with the first as the most significant.
`phash(x)` equals `int(str(imagehash.phash(img)), 16)`, so hashes can be compared with that tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.fft import dct

from diffgen.metrics.rgb import as_rgb_batch

_BIT_WEIGHTS = np.array([1 << (63 - i) for i in range(64)], dtype=np.uint64)


def non_finite(pixels: np.ndarray) -> bool:
    """True when a float array holds NaN or Inf (a diverged sampler); integer arrays never do."""
    return bool(np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all())


def is_black(image: np.ndarray, max_level: int = 0) -> bool:
    """Every channel of every pixel is at most `max_level` (0..255): the safety-checker blank or a dead decode."""
    return bool(image.max() <= max_level)


def pixel_std(image: np.ndarray) -> float:
    """Standard deviation of the grayscale (PIL "L") image, in 0..255 levels; low means flat."""
    return float(np.asarray(Image.fromarray(image).convert("L"), np.float64).std())


def phash(image: np.ndarray) -> int:
    """The 64-bit DCT perceptual hash of an (H, W, 3) uint8 image, as an int in [0, 2**64)."""
    small = Image.fromarray(image).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    freq = dct(dct(np.asarray(small, np.float64), axis=0), axis=1)[:8, :8]
    bits = (freq > np.median(freq)).ravel()
    return int(_BIT_WEIGHTS[bits].sum(dtype=np.uint64))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (int(a) ^ int(b)).bit_count()


def _hash_array(hashes: Sequence[int]) -> np.ndarray:
    values = [int(h) for h in hashes]
    for i, h in enumerate(values):
        if not 0 <= h < 1 << 64:
            raise ValueError(f"hash {i} is not a 64-bit unsigned value: {h}")
    return np.array(values, dtype=np.uint64)


def _distances(row: int, others: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(others, np.uint64(row)))


def near_duplicates(hashes: Sequence[int], max_distance: int) -> list[int]:
    """For each hash, the index of the first earlier hash within `max_distance` bits, or -1.

    The first image of a cluster keeps -1 and every later one points at the earliest image
    it is close to, so dropping every row that is not -1 keeps one image per cluster. O(N²)
    popcounts, vectorised: ~10⁴ hashes (one QC group) take well under a second.
    """
    values = _hash_array(hashes)
    out = []
    for i in range(len(values)):
        close = np.flatnonzero(_distances(values[i], values[:i]) <= max_distance)
        out.append(int(close[0]) if close.size else -1)
    return out


def reference_duplicates(hashes: Sequence[int], reference: Sequence[int], max_distance: int) -> list[int]:
    """For each hash, the index of the closest reference hash within `max_distance` bits, or -1.

    Catches generated images that copy a reference (training) image; ties go to the lowest index.
    """
    values, refs = _hash_array(hashes), _hash_array(reference)
    out = []
    for h in values:
        if not refs.size:
            out.append(-1)
            continue
        d = _distances(h, refs)
        best = int(np.argmin(d))
        out.append(best if d[best] <= max_distance else -1)
    return out


@dataclass(frozen=True)
class ImageCheck:
    """The per-image check columns of one image."""

    black: bool
    flat: bool
    pixel_std: float
    phash: int


def check_images(images: Sequence[np.ndarray], black_level: int, flat_std: float) -> list[ImageCheck]:
    """All cheap checks for a batch of (H, W, 3) uint8 images; thresholds from the config."""
    checks = []
    for image in as_rgb_batch(images):
        std = pixel_std(image)
        checks.append(
            ImageCheck(black=is_black(image, black_level), flat=std < flat_std, pixel_std=std, phash=phash(image))
        )
    return checks
