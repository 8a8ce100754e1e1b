"""Invisible watermark, scheme 1 (images written before provenance_version 2): a bare 64-bit payload
hidden with invisible-watermark's `dwtDctSvd` method; no error correction, no synchronisation. Kept so
`verify` reads older images; new images use `watermark` (scheme 2).

The payload rides in the U (blue-difference) chroma plane. A Haar DWT takes the plane's
approximation band; in each 4x4 block of it the largest singular value of the block's DCT
is quantised (step 36) onto one of two lattices, one bit per block. The 64 bits repeat over
all blocks and decoding takes a per-bit majority vote, so an image needs at least 64 blocks:
8x8 pixels each, hence `MIN_SIDE`.

The per-block arithmetic is invisible-watermark's (`imwatermark.dwtDctSvd.EmbedDwtDctSvd`:
`diffuse_dct_svd`, `infer_dct_svd`), done here on all blocks at once: one stacked DCT and SVD
instead of one Python call per 4x4 block, which made the library take ~0.57 s per 512x512 image
(embed and read-back check) and ~2.2 s at 1024x1024, more than a GPU takes to sample it. The
tests hold the two to the same blocks and bits, and the library's own decoder reads these marks.
Its `encode()` wrapper is not used:
  - the public `WatermarkEncoder`/`WatermarkDecoder` refuse images under 256x256 pixels;
  - it writes the float result back into a uint8 array, which truncates and wraps
    (a value just over 255 becomes ~0);
  - it swaps the horizontal and vertical detail bands when it rebuilds the plane.
On textured images that drops PSNR to ~15 dB and loses bits at 64-128 px. Here the chroma
change alone is added to the RGB pixels in floating point and rounded once; where a pixel
would leave [0, 255] it is moved by a grey offset, which changes luminance but not chroma,
so the mark survives in near-white and near-black areas. Pixels whose channels already span
the whole range (pure saturated blue, yellow) cannot carry any chroma change.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pywt

from diffgen.provenance.watermark import (  # noqa: F401  (payload_hex, payload_from_hex, bit_accuracy: this module's API)
    PAYLOAD_BITS,
    PAYLOAD_BYTES,
    WatermarkError,
    _check_payload,
    _check_pixels,
    bit_accuracy,
    payload_from_hex,
    payload_hex,
)

MIN_SIDE = 64
METHOD = "dwtDctSvd"
# invisible-watermark's defaults for dwtDctSvd: U plane only, quantisation step 36, 4x4 blocks.
_SCALES = (0, 36, 0)
_BLOCK = 4
_U = 1
# RGB change per unit of U in OpenCV's YUV (float inputs centre chroma on 0.5).
_U_TO_RGB = cv2.cvtColor(np.float32([[[0.0, 1.5, 0.5]]]), cv2.COLOR_YUV2RGB)[0, 0].astype(np.float64)


def payload_for(run_id: str, record_id: str) -> bytes:
    """The 8-byte payload of one image: the first 64 bits of sha256 over (run id, record id)."""
    digest = hashlib.sha256(f"diffgen-watermark\x00{run_id}\x00{record_id}".encode("utf-8", "surrogatepass"))
    return digest.digest()[:PAYLOAD_BYTES]


def embed(pixels: np.ndarray, payload: bytes) -> np.ndarray:
    """A copy of `pixels` ((H, W, 3) uint8 RGB, both sides >= MIN_SIDE) carrying the 8-byte `payload`."""
    _check_pixels(pixels, MIN_SIDE)
    _check_payload(payload)
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))
    # The wavelet needs even sides and the library's decoder reads only the multiple-of-4 region.
    h, w = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    plane = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2YUV)[:h, :w, _U].astype(np.float64)
    approx, details = pywt.dwt2(plane, "haar")
    approx = _encode_band(approx, bits, _SCALES[_U])
    delta_u = pywt.idwt2((approx, details), "haar") - plane
    out = pixels.astype(np.float64)
    region = out[:h, :w] + delta_u[..., None] * _U_TO_RGB
    below = np.maximum(-region.min(axis=-1), 0.0)
    above = np.maximum(region.max(axis=-1) - 255.0, 0.0)
    out[:h, :w] = region + (below - above)[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def extract(pixels: np.ndarray) -> bytes:
    """The 8-byte payload read from (H, W, 3) uint8 RGB pixels, whether or not one was embedded."""
    _check_pixels(pixels, MIN_SIDE)
    h, w = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    # As the library's decoder reads: the U plane of the uint8 YUV image.
    plane = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2YUV)[:h, :w, _U]
    approx, _ = pywt.dwt2(plane, "haar")
    s0 = np.linalg.svd(_dct(_blocks(approx)), compute_uv=False)[:, 0]
    scale = _SCALES[_U]
    votes = ((s0 % scale) > scale * 0.5).astype(np.float64)
    # Block k carries bit k mod 64; a bit is the majority of its blocks' votes (the library's mean > 127/255).
    sums = np.bincount(np.arange(votes.size) % PAYLOAD_BITS, weights=votes, minlength=PAYLOAD_BITS)
    counts = np.bincount(np.arange(votes.size) % PAYLOAD_BITS, minlength=PAYLOAD_BITS)
    bits = (sums / counts) * 255 > 127
    return np.packbits(bits.astype(np.uint8)).tobytes()


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `M @ B @ M.T` is `cv2.dct(B)` for an n x n block B."""
    k, i = np.mgrid[0:n, 0:n]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(_BLOCK)


def _dct(blocks: np.ndarray) -> np.ndarray:
    return _DCT @ blocks @ _DCT.T


def _blocks(band: np.ndarray) -> np.ndarray:
    """The band's whole 4x4 blocks, (N, 4, 4), row by row: the library's block order."""
    rows, cols = band.shape[0] // _BLOCK, band.shape[1] // _BLOCK
    tiles = band[: rows * _BLOCK, : cols * _BLOCK].reshape(rows, _BLOCK, cols, _BLOCK)
    return tiles.transpose(0, 2, 1, 3).reshape(-1, _BLOCK, _BLOCK)


def _encode_band(band: np.ndarray, bits: np.ndarray, scale: float) -> np.ndarray:
    """A copy of the DWT approximation band with bit k mod 64 in block k: each block's DCT has its
    largest singular value moved to (floor(s0 / scale) + 0.25 + 0.5 * bit) * scale."""
    blocks = _blocks(band)
    u, s, vt = np.linalg.svd(_dct(blocks))
    wanted = bits[np.arange(len(blocks)) % PAYLOAD_BITS]
    s[:, 0] = (s[:, 0] // scale + 0.25 + 0.5 * wanted) * scale
    marked = _DCT.T @ (u @ (s[..., None] * vt)) @ _DCT
    rows, cols = band.shape[0] // _BLOCK, band.shape[1] // _BLOCK
    out = band.copy()
    out[: rows * _BLOCK, : cols * _BLOCK] = (
        marked.reshape(rows, cols, _BLOCK, _BLOCK).transpose(0, 2, 1, 3).reshape(rows * _BLOCK, cols * _BLOCK)
    )
    return out
