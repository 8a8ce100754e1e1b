"""Invisible watermark, scheme 2: an error-corrected, self-checking 64-bit payload on a size-normalised grid.

Where the bits live. The image, less a margin on each side, is cut into a G x G grid of cells in
normalised coordinates (cell (i, j) covers the same share of height and width at any size), so the
grid stretches with the image: a rescaled copy has the same cells. Each cell's mean in a YUV plane
(BT.601, OpenCV's `COLOR_RGB2YUV`) carries one bit by dither modulation, the scalar form of
quantisation index modulation (Chen and Wornell, "Quantization index modulation", IEEE Trans. Inf.
Theory 47(4), 2001): the mean is moved to the nearest point of `dither + bit * step / 2 + k * step`
and read back as the nearer of the two lattices. A cell mean is what JPEG's DC terms, 4:2:0 chroma
averaging and area resampling all keep, and quantising it ignores the image content (no host
interference). The change per cell is spread over the pixels by bilinear interpolation between cell
centres, so it holds no sharp edges for JPEG to quantise away, and the embedding passes measure the
result as the decoder will and correct it. It goes into chroma (and, on small images, a little
luma); where a pixel would leave [0, 255] it is moved by a grey offset, which changes luminance
but not chroma.

Two layouts, chosen by the image's shorter side, both tried by the decoder:
  - `g16` (>= 128 px): 16 x 16 cells in U and V inside a 5 % margin, 512 slots for a BCH(m=9, t=56)
    codeword of 478 bits; the unmarked margin means a crop of up to 10 % of a side loses no cell;
  - `g8` (64..127 px): 8 x 8 cells in Y, U and V, no margin (at 64 px the cells then sit on JPEG's
    8 x 8 blocks), 192 slots for a BCH(m=8, t=13) codeword of 188 bits.
The codeword (`payload_code`) is the payload, a 24-bit check and BCH parity: decoding yields the
exact payload or nothing.

Synchronisation. Cell means are measured on a 128 x 128 canvas resampled from the image, so any
rescale (aspect included) lands on the same cells. Crops that are resized back move the grid; they
are found by exhaustive search over a small parameter space (Cox, Miller, Bloom, Fridrich and
Kalker, "Digital Watermarking and Steganography", 2nd ed., 2008, on synchronisation): the decoder
assumes the image shows a centred share `s` of the original (s from 1 down to 0.7 in steps of
0.025, then refined to 1/160) and that its contrast was scaled by a gain `g` (0.8 to 1.25 in steps
of 0.05, then refined to 1/80: a contrast change about mid-grey scales the chroma means, which
moves them off the lattice), measures the cells through that map and scores it blindly: on the
right map every cell mean sits on the union of the two lattices, so the mean of
cos(4 pi (mean / g - dither) / step) is near 1; elsewhere it is near 0. Only the unchanged map and
the two best maps are decoded. Uniform border bands (a crop padded back in place) are masked first;
cells less than half visible are erasures, decoded once filled with 0 and once with 1 (one of the
two fillings gets at most half of them wrong). Not handled: rotation, off-centre crops, flips.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from diffgen.provenance.payload_code import PayloadCode

PAYLOAD_BYTES = 8
PAYLOAD_BITS = PAYLOAD_BYTES * 8
MIN_SIDE = 64
METHOD = "cellqim-bch"
# BCH decodes tried per image at most: 2 layouts x 3 maps (uncropped, 2 best crops) x 2 erasure fillings.
MAX_DECODE_ATTEMPTS = 12

_CANVAS = 128  # side of the canvas the cells are measured on (the grid's region resampled)
_WORK = 160  # side of the whole image resampled once per decode, before the crop maps
_PASSES = 5
_SCALES = np.round(np.arange(1.0, 0.6999, -0.025), 4)
_GAINS = np.round(np.arange(0.8, 1.2501, 0.05), 4)
_REFINE = ((0.0125, 0.025), (0.00625, 0.0125))
_MAPS_DECODED = 2
_RGB_TO_YUV = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])
_YUV_TO_RGB = np.linalg.inv(_RGB_TO_YUV)


class WatermarkError(ValueError):
    """Pixels or a payload that cannot carry or yield a watermark; the message says why."""


@dataclass(frozen=True)
class Layout:
    name: str
    grid: int
    steps: tuple[float, float, float]  # QIM step per plane (Y, U, V); 0 leaves the plane alone
    code: PayloadCode
    min_side: int
    margin: float  # share of each side outside the grid, left unmarked
    slots: np.ndarray = field(init=False, repr=False)  # flat (cell, plane) index of each codeword bit
    dither: np.ndarray = field(init=False, repr=False)  # (grid, grid, 3) in [0, 1)

    def __post_init__(self) -> None:
        key = int.from_bytes(hashlib.sha256(f"diffgen-watermark-2\x00{self.name}".encode()).digest()[:8], "big")
        rng = np.random.default_rng(key)
        usable = np.flatnonzero(np.broadcast_to(np.asarray(self.steps) > 0, (self.grid, self.grid, 3)))
        if usable.size < self.code.bits:
            raise ValueError(f"layout {self.name}: {usable.size} slots for a {self.code.bits}-bit codeword")
        object.__setattr__(self, "slots", np.sort(rng.permutation(usable)[: self.code.bits]))
        object.__setattr__(self, "dither", rng.random((self.grid, self.grid, 3)))

    def steps_at(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.steps, np.float64), (self.grid, self.grid, 3)).reshape(-1)[self.slots]


LAYOUTS = (
    Layout("g16", 16, (0.0, 4.5, 7.5), PayloadCode(9, 56), min_side=128, margin=0.05),
    # No margin: at 64 px its 8 px cells then sit on JPEG's 8 x 8 blocks, which loses far fewer of them.
    Layout("g8", 8, (3.0, 4.5, 6.5), PayloadCode(8, 13), min_side=MIN_SIDE, margin=0.0),
)


@dataclass(frozen=True)
class Detection:
    """A payload read back: exact (its check matched after BCH decoding) with how hard it was to read."""

    payload: bytes
    confidence: float  # 1 - corrected / (t + 1): 1.0 when no bit needed correcting
    corrected: int
    correctable: int
    layout: str
    scale: float  # the share of the original's side the image shows (1.0: uncropped)
    gain: float  # how the image's contrast was scaled (1.0: unchanged)


def layout_for(height: int, width: int) -> Layout:
    side = min(height, width)
    for layout in LAYOUTS:
        if side >= layout.min_side:
            return layout
    raise WatermarkError(
        f"image {width}x{height} is too small for a {PAYLOAD_BITS}-bit watermark: "
        f"both sides must be at least {MIN_SIDE} px"
    )


def embed(pixels: np.ndarray, payload: bytes) -> np.ndarray:
    """A copy of `pixels` ((H, W, 3) uint8 RGB, both sides >= MIN_SIDE) carrying the 8-byte `payload`."""
    _check_pixels(pixels)
    _check_payload(payload)
    height, width = pixels.shape[:2]
    layout = layout_for(height, width)
    bits = layout.code.encode(payload).astype(np.float64)
    steps, dither = layout.steps_at(), layout.dither.reshape(-1)[layout.slots]
    rows, cols = _cell_index(height, layout), _cell_index(width, layout)
    (r0, r1), (c0, c1) = _span(rows, layout.grid), _span(cols, layout.grid)
    out = pixels.astype(np.float32)
    marked = pixels
    # Each pass measures the rounded image as the decoder will and moves every cell onto its lattice
    # point again: rounding, clipping and the canvas resampling knock a few off after the first.
    for _ in range(_PASSES):
        canvas, _ = _warp(_canvas(marked), np.ones((_WORK, _WORK)), layout.margin, 1.0)
        means = _cell_means(canvas, np.ones((_CANVAS, _CANVAS)), layout.grid)[0].reshape(-1)[layout.slots]
        offset = dither * steps + bits * steps / 2
        change = np.zeros(layout.grid * layout.grid * 3)
        change[layout.slots] = offset + np.round((means - offset) / steps) * steps - means
        rgb = (change.reshape(layout.grid, layout.grid, 3) @ _YUV_TO_RGB.T).astype(np.float32)
        out[r0:r1, c0:c1] += cv2.resize(rgb, (c1 - c0, r1 - r0), interpolation=cv2.INTER_LINEAR)
        low = np.minimum(np.minimum(out[..., 0], out[..., 1]), out[..., 2])
        high = np.maximum(np.maximum(out[..., 0], out[..., 1]), out[..., 2])
        out += (np.maximum(-low, 0.0) - np.maximum(high - 255.0, 0.0))[..., None]
        marked = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return marked


def _span(index: np.ndarray, grid: int) -> tuple[int, int]:
    inside = np.flatnonzero(index < grid)
    return int(inside[0]), int(inside[-1]) + 1


def _cell_index(n: int, layout: Layout) -> np.ndarray:
    """The grid cell of each of n pixel rows (or columns) by its centre; `grid` for those in the margin."""
    at = ((np.arange(n) + 0.5) / n - layout.margin) / (1 - 2 * layout.margin) * layout.grid
    return np.where((at >= 0) & (at < layout.grid), np.floor(at), layout.grid).astype(np.intp)


def decode(pixels: np.ndarray, *, search: bool = True) -> Detection | None:
    """The payload in (H, W, 3) uint8 RGB pixels, or None when none is found.

    The uncropped map is tried first for both layouts; with `search`, then the best-scoring crop maps
    (at most `MAX_DECODE_ATTEMPTS` BCH decodes in all). Without it, only the image as it is: the write
    stage's read-back check."""
    _check_pixels(pixels, minimum=16)
    canvas, visible = _canvas(pixels), _visible_mask(pixels)
    for layout in LAYOUTS:
        if (found := _decode_map(canvas, visible, layout, 1.0, 1.0)) is not None:
            return found
    if not search:
        return None
    for layout in LAYOUTS:
        for scale, gain in _best_maps(canvas, visible, layout):
            if (scale, gain) != (1.0, 1.0) and (found := _decode_map(canvas, visible, layout, scale, gain)) is not None:
                return found
    return None


def extract(pixels: np.ndarray, *, search: bool = True) -> bytes | None:
    """The payload read from the pixels, or None: `decode` without the details."""
    found = decode(pixels, search=search)
    return found.payload if found is not None else None


def payload_hex(payload: bytes) -> str:
    """The payload as 16 lowercase hex characters, the form the index and provenance record hold."""
    _check_payload(payload)
    return payload.hex()


def payload_from_hex(text: str) -> bytes:
    try:
        payload = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise WatermarkError(f"watermark payload {text!r} is not hex") from None
    _check_payload(payload)
    return payload


def bit_accuracy(a: bytes, b: bytes) -> float:
    """The share of bits two payloads of the same length agree on, in [0, 1]."""
    if len(a) != len(b) or not a:
        raise WatermarkError(f"cannot compare payloads of {len(a)} and {len(b)} bytes")
    differing = np.unpackbits(np.bitwise_xor(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8))).sum()
    return 1.0 - float(differing) / (8 * len(a))


def _canvas(pixels: np.ndarray) -> np.ndarray:
    """The image resampled to _WORK x _WORK (area averaging when shrinking) in float YUV."""
    height, width = pixels.shape[:2]
    shrink = height >= _WORK and width >= _WORK
    small = cv2.resize(
        pixels.astype(np.float32), (_WORK, _WORK), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return small.astype(np.float64) @ _RGB_TO_YUV.T


def _visible_mask(pixels: np.ndarray) -> np.ndarray:
    """1 on the work image except under uniform bands along the borders (a crop padded back in place)."""
    height, width = pixels.shape[:2]
    # Per plane, contiguous along the reduced axis: numpy's reductions over a 3-wide innermost axis
    # took 0.3 s each at 1024 px.
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    flat_rows = (planes.max(axis=2) - planes.min(axis=2)).max(axis=0) <= 2
    flat_cols = (planes.max(axis=1) - planes.min(axis=1)).max(axis=0) <= 2
    top, bottom = _run_length(flat_rows), height - _run_length(flat_rows[::-1])
    left, right = _run_length(flat_cols), width - _run_length(flat_cols[::-1])
    mask = np.zeros((_WORK, _WORK))
    if bottom - top < height / 4 or right - left < width / 4:
        return np.ones((_WORK, _WORK))  # a nearly uniform image: nothing to mask
    r0, r1 = int(np.ceil(top * _WORK / height)), int(bottom * _WORK // height)
    c0, c1 = int(np.ceil(left * _WORK / width)), int(right * _WORK // width)
    mask[r0:r1, c0:c1] = 1.0
    return mask


def _run_length(flags: np.ndarray) -> int:
    """How many leading entries are True."""
    return int(flags.size if flags.all() else np.argmin(flags))


def _warp(work: np.ndarray, visible: np.ndarray, margin: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The grid's region (the original inside `margin`) on the _CANVAS x _CANVAS canvas, and which canvas
    pixels the image shows, if the image shows the centred share `scale` of the original's side."""
    # canvas pixel u is at x = M + (1 - 2M) (u + 0.5) / C of the original; the image shows x' = (x - (1 - s) / 2) / s,
    # which is work pixel x' W - 0.5.
    a = (1 - 2 * margin) * _WORK / (_CANVAS * scale)
    b = (margin + (1 - 2 * margin) * 0.5 / _CANVAS - (1 - scale) / 2) * _WORK / scale - 0.5
    matrix = np.float32([[a, 0, b], [0, a, b]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(work.astype(np.float32), matrix, (_CANVAS, _CANVAS), flags=flags)
    seen = cv2.warpAffine(visible.astype(np.float32), matrix, (_CANVAS, _CANVAS), flags=flags)
    return warped.astype(np.float64), (seen > 0.99).astype(np.float64)


def _cell_means(canvas: np.ndarray, visible: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell and plane the mean over its visible canvas pixels, (grid, grid, 3), and each cell's visible share."""
    k = _CANVAS // grid
    weight = visible.reshape(grid, k, grid, k).sum(axis=(1, 3))
    sums = (canvas * visible[..., None]).reshape(grid, k, grid, k, 3).sum(axis=(1, 3))
    return sums / np.maximum(weight, 1e-9)[..., None], weight / (k * k)


def _measure(canvas: np.ndarray, visible: np.ndarray, layout: Layout, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Each codeword slot's cell mean over its step, and whether its cell is visible enough, under a crop map."""
    warped, seen = _warp(canvas, visible, layout.margin, scale)
    means, share = _cell_means(warped, seen, layout.grid)
    cells = np.repeat(share.reshape(-1), 3)[layout.slots]
    return means.reshape(-1)[layout.slots] / layout.steps_at(), cells >= 0.5


def _phase(measured: np.ndarray, layout: Layout, gain: float) -> np.ndarray:
    """Each slot's position between lattice points, in [0, 1), if the image's contrast was multiplied by `gain`."""
    return (measured / gain - layout.dither.reshape(-1)[layout.slots]) % 1.0


def _best_maps(canvas: np.ndarray, visible: np.ndarray, layout: Layout) -> list[tuple[float, float]]:
    """The `_MAPS_DECODED` (crop share, gain) maps that score best, each refined around a coarse-grid peak."""
    measured: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    scores: dict[tuple[float, float], float] = {}

    def score(scale: float, gain: float) -> float:
        if (scale, gain) not in scores:
            if scale not in measured:
                measured[scale] = _measure(canvas, visible, layout, scale)
            values, usable = measured[scale]
            enough = usable.sum() >= layout.code.bits // 2 and 0.6 < scale <= 1.0
            scores[scale, gain] = float(np.cos(4 * np.pi * _phase(values, layout, gain)[usable]).mean()) if enough else -1
        return scores[scale, gain]

    coarse = [(float(s), 1.0) for s in _SCALES] + [(1.0, float(g)) for g in _GAINS if g != 1.0]
    peaks = sorted(coarse, key=lambda m: score(*m), reverse=True)[:_MAPS_DECODED]
    refined = []
    for scale, gain in peaks:
        for ds, dg in _REFINE:
            around = [(scale + a * ds, gain + b * dg) for a in (-1, 0, 1) for b in (-1, 0, 1)]
            scale, gain = max(around, key=lambda m: score(*m))
        refined.append((scale, gain))
    return list(dict.fromkeys(refined))


def _decode_map(canvas: np.ndarray, visible: np.ndarray, layout: Layout, scale: float, gain: float) -> Detection | None:
    values, usable = _measure(canvas, visible, layout, scale)
    phase = _phase(values, layout, gain)
    bits = ((phase > 0.25) & (phase < 0.75)).astype(np.uint8)  # nearer the bit-1 lattice (offset step/2)
    fillings = (0, 1) if not usable.all() else (None,)
    for fill in fillings:
        word = bits if fill is None else np.where(usable, bits, fill).astype(np.uint8)
        found = layout.code.decode(word)
        if found is not None:
            confidence = 1.0 - found.corrected / (found.correctable + 1)
            return Detection(found.payload, round(confidence, 4), found.corrected, found.correctable, layout.name,
                             round(scale, 5), round(gain, 4))  # fmt: skip
    return None


def _check_pixels(pixels: np.ndarray, minimum: int = MIN_SIDE) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        got = (
            f"{pixels.dtype} array of shape {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        )
        raise WatermarkError(f"expected an (H, W, 3) uint8 RGB array, got {got}")
    height, width = pixels.shape[:2]
    if min(height, width) < minimum:
        raise WatermarkError(
            f"image {width}x{height} is too small for a {PAYLOAD_BITS}-bit watermark: "
            f"both sides must be at least {minimum} px"
        )


def _check_payload(payload: bytes) -> None:
    if not isinstance(payload, bytes) or len(payload) != PAYLOAD_BYTES:
        got = f"{len(payload)} bytes" if isinstance(payload, bytes) else type(payload).__name__
        raise WatermarkError(f"a watermark payload is exactly {PAYLOAD_BYTES} bytes, got {got}")
