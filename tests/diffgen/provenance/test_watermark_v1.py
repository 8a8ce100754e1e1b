from __future__ import annotations

import io

import numpy as np
import pytest
from imwatermark import WatermarkDecoder
from imwatermark.dwtDctSvd import EmbedDwtDctSvd
from PIL import Image, ImageDraw

from diffgen.provenance import watermark_v1 as wm

PAYLOAD = wm.payload_for("run-1", "0123456789abcdef01234567")


def smooth(size: int, *, width: int | None = None) -> np.ndarray:
    """Gradients plus a few flat shapes: what diffusion outputs look like to a watermark."""
    width = width or size
    y, x = np.mgrid[0:size, 0:width] / max(size, width)
    base = np.stack([40 + 180 * x, 60 + 150 * y, 200 - 120 * (x + y) / 2], axis=-1)
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.2, size * 0.2, width * 0.6, size * 0.7), fill=(230, 200, 40))
    draw.rectangle((width * 0.55, size * 0.5, width * 0.9, size * 0.9), fill=(30, 90, 160))
    return np.asarray(image)


def noisy(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.mark.parametrize("size", [64, 128, 256, 512])
@pytest.mark.parametrize("kind", [smooth, noisy])
def test_round_trip_recovers_all_64_bits_with_little_distortion(size: int, kind) -> None:
    pixels = kind(size)
    marked = wm.embed(pixels, PAYLOAD)
    assert marked.shape == pixels.shape and marked.dtype == np.uint8
    assert wm.extract(marked) == PAYLOAD
    # Measured ~41.5-42.5 dB on both kinds; the library's own encode() gives ~15 dB on noise.
    assert psnr(pixels, marked) > 39.0
    # No wrap-around: the library's uint8 write-back turns 256 into 0 (differences of ~255).
    assert np.abs(marked.astype(int) - pixels).max() <= 20


def test_odd_sizes_and_non_square_images_round_trip() -> None:
    for height, width in [(97, 130), (64, 301), (130, 64)]:
        pixels = smooth(height, width=width)
        assert wm.extract(wm.embed(pixels, PAYLOAD)) == PAYLOAD, (height, width)


def test_an_unmarked_image_does_not_yield_the_payload() -> None:
    accuracy = wm.bit_accuracy(wm.extract(smooth(128)), PAYLOAD)
    assert accuracy < 0.8


def test_distinct_payloads_are_told_apart() -> None:
    pixels = smooth(128)
    payloads = [wm.payload_for("run-1", f"record-{i}") for i in range(3)]
    extracted = [wm.extract(wm.embed(pixels, p)) for p in payloads]
    assert extracted == payloads
    assert len(set(payloads)) == 3


def test_embedding_is_deterministic() -> None:
    pixels = noisy(64, seed=3)
    assert np.array_equal(wm.embed(pixels, PAYLOAD), wm.embed(pixels, PAYLOAD))


def test_input_is_left_untouched() -> None:
    pixels = smooth(64)
    before = pixels.copy()
    wm.embed(pixels, PAYLOAD)
    assert np.array_equal(pixels, before)


def test_channel_order_is_rgb() -> None:
    # On mid grey the chroma-U change moves B most, G a little and R not at all (BT.601).
    grey = np.full((64, 64, 3), 128, np.uint8)
    change = np.abs(wm.embed(grey, PAYLOAD).astype(int) - grey).reshape(-1, 3).sum(axis=0)
    assert change[0] == 0
    assert change[2] > 3 * change[1] > 0
    # Read as BGR, the same pixels carry a different payload.
    marked = wm.embed(smooth(128), PAYLOAD)
    assert wm.bit_accuracy(wm.extract(np.ascontiguousarray(marked[..., ::-1])), PAYLOAD) < 0.8


def test_near_white_and_near_black_images_keep_the_mark() -> None:
    # Raising chroma in a white pixel would push B past 255; a grey offset makes room instead.
    for level in (254, 255, 0, 1):
        flat = np.full((64, 64, 3), level, np.uint8)
        assert wm.extract(wm.embed(flat, PAYLOAD)) == PAYLOAD, level


def test_public_library_decoder_reads_the_mark() -> None:
    marked = wm.embed(smooth(256), PAYLOAD)
    bgr = np.ascontiguousarray(marked[..., ::-1])
    assert WatermarkDecoder("bytes", wm.PAYLOAD_BITS).decode(bgr, wm.METHOD) == PAYLOAD


def _library(bits: list[int]) -> EmbedDwtDctSvd:
    return EmbedDwtDctSvd(bits, wmLen=wm.PAYLOAD_BITS, scales=[0, 36, 0], block=4)


@pytest.mark.parametrize(("rows", "cols"), [(32, 32), (50, 66), (256, 128)])
def test_band_encoding_matches_the_library_block_by_block(rows: int, cols: int) -> None:
    band = np.random.default_rng(rows).uniform(0, 510, (rows, cols))
    bits = np.unpackbits(np.frombuffer(PAYLOAD, np.uint8))
    expected = band.copy()
    _library(bits.tolist()).encode_frame(expected, 36)
    np.testing.assert_allclose(wm._encode_band(band, bits, 36), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "pixels",
    [wm.embed(smooth(64), PAYLOAD), wm.embed(noisy(200, seed=3), PAYLOAD), smooth(128), noisy(97),
     wm.embed(smooth(97, width=130), PAYLOAD)],
    ids=["marked-64", "marked-noise-200", "unmarked-128", "unmarked-noise-97", "marked-97x130"],
)  # fmt: skip
def test_extract_reads_the_bits_the_library_decoder_reads(pixels: np.ndarray) -> None:
    # JPEG-damaged copies too, where many blocks vote against their bit.
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=70)
    damaged = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    for image in (pixels, damaged):
        bits = _library([]).decode(np.ascontiguousarray(image[..., ::-1]))
        assert wm.extract(image) == np.packbits(np.asarray(bits, np.uint8)).tobytes()


def test_survives_jpeg_quality_90() -> None:
    marked = wm.embed(smooth(256), PAYLOAD)
    buf = io.BytesIO()
    Image.fromarray(marked).save(buf, format="JPEG", quality=90)
    attacked = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert wm.bit_accuracy(wm.extract(attacked), PAYLOAD) >= 0.95


@pytest.mark.parametrize("shape", [(63, 64, 3), (64, 63, 3), (32, 32, 3)])
def test_images_smaller_than_min_side_are_refused(shape: tuple[int, int, int]) -> None:
    pixels = np.zeros(shape, np.uint8)
    with pytest.raises(wm.WatermarkError, match="at least 64 px"):
        wm.embed(pixels, PAYLOAD)
    with pytest.raises(wm.WatermarkError, match="at least 64 px"):
        wm.extract(pixels)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8), np.zeros((64, 64, 3), np.float32), [[0]]],
    ids=["grey", "rgba", "float", "list"],
)
def test_bad_pixels_are_refused(pixels) -> None:
    with pytest.raises(wm.WatermarkError, match=r"\(H, W, 3\) uint8 RGB"):
        wm.embed(pixels, PAYLOAD)


@pytest.mark.parametrize("payload", [b"", b"1234567", b"123456789", "12345678"])
def test_payloads_of_the_wrong_size_are_refused(payload) -> None:
    with pytest.raises(wm.WatermarkError, match="exactly 8 bytes"):
        wm.embed(smooth(64), payload)


def test_payload_for_is_stable_and_distinct() -> None:
    assert wm.payload_for("run-1", "a") == wm.payload_for("run-1", "a")
    assert len(wm.payload_for("run-1", "a")) == 8
    assert len({wm.payload_for(r, i) for r in ("run-1", "run-2") for i in ("a", "b")}) == 4
    # Fixed so that marks written by one diffgen version are checked by the next.
    assert wm.payload_hex(wm.payload_for("run-1", "a")) == "4a66e88c2fbb2a65"


def test_payload_hex_round_trips_and_rejects_garbage() -> None:
    assert wm.payload_from_hex(wm.payload_hex(PAYLOAD)) == PAYLOAD
    with pytest.raises(wm.WatermarkError, match="not hex"):
        wm.payload_from_hex("zz" * 8)
    with pytest.raises(wm.WatermarkError, match="exactly 8 bytes"):
        wm.payload_from_hex("abcd")


def test_bit_accuracy() -> None:
    assert wm.bit_accuracy(PAYLOAD, PAYLOAD) == 1.0
    flipped = bytes([PAYLOAD[0] ^ 0b1000_0001]) + PAYLOAD[1:]
    assert wm.bit_accuracy(PAYLOAD, flipped) == 62 / 64
    assert wm.bit_accuracy(b"\x00" * 8, b"\xff" * 8) == 0.0
    with pytest.raises(wm.WatermarkError, match="cannot compare"):
        wm.bit_accuracy(PAYLOAD, PAYLOAD[:4])
