"""Scheme 2: error-corrected, self-checking payload on a size-normalised grid, found again after crops and rescales."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from diffgen.provenance import watermark as wm
from diffgen.provenance.payload_code import MESSAGE_BITS, PayloadCode

PAYLOAD = bytes.fromhex("d1ff9e40a7c3b215")


def scene(size: int, seed: int = 0, width: int | None = None) -> np.ndarray:
    """A smooth gradient with a few shapes and a little noise."""
    r = np.random.default_rng(seed)
    width = width or size
    y, x = np.mgrid[0:size, 0:width] / max(size, width)
    base = np.stack([40 + 180 * x, 60 + 150 * y, 110 + 90 * np.sin(5 * x * y + seed)], axis=-1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = r.uniform(0, 0.8, 2) * (width, size)
        draw.ellipse((x0, y0, x0 + width / 4, y0 + size / 5), fill=tuple(int(v) for v in r.integers(0, 256, 3)))
    image = image.filter(ImageFilter.GaussianBlur(radius=max(size, width) / 256))
    noisy = np.asarray(image).astype(np.float64) + r.normal(0, 2.0, (size, width, 3))
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_the_code_corrects_up_to_t_errors_and_refuses_more() -> None:
    code = PayloadCode(8, 13)
    word = code.encode(PAYLOAD)
    assert word.size == code.bits == MESSAGE_BITS + code.parity_bits
    rng = np.random.default_rng(0)
    damaged = word.copy()
    damaged[rng.choice(word.size, 13, replace=False)] ^= 1
    found = code.decode(damaged)
    assert found is not None and (found.payload, found.corrected) == (PAYLOAD, 13)
    damaged[rng.choice(np.flatnonzero(damaged == word), 20, replace=False)] ^= 1  # 33 errors: beyond t
    assert code.decode(damaged) is None or code.decode(damaged).payload != PAYLOAD


def test_the_check_refuses_a_codeword_of_a_forged_message() -> None:
    """A valid BCH codeword whose 24 check bits do not belong to its payload is refused."""
    code = PayloadCode(9, 56)
    word = code.encode(PAYLOAD)
    forged = word.copy()
    forged[MESSAGE_BITS - 1] ^= 1  # one check bit off, then re-encode the parity around the wrong message
    import bchlib

    bch = bchlib.BCH(56, m=9)
    message = np.packbits(forged[:MESSAGE_BITS]).tobytes()
    parity = np.unpackbits(np.frombuffer(bytes(bch.encode(message)), np.uint8))[: code.parity_bits]
    assert code.decode(np.concatenate([forged[:MESSAGE_BITS], parity])) is None


def test_random_words_and_unmarked_images_decode_to_nothing() -> None:
    rng = np.random.default_rng(1)
    for code in (PayloadCode(8, 13), PayloadCode(9, 56)):
        assert code.false_accept_bound() < 4e-11
        assert all(code.decode(rng.integers(0, 2, code.bits, dtype=np.uint8)) is None for _ in range(300))
    for seed in range(12):
        assert wm.decode(scene(128 + 32 * seed, seed)) is None
    assert wm.decode(np.full((256, 256, 3), 128, np.uint8)) is None
    assert wm.MAX_DECODE_ATTEMPTS * 2.0**-24 < 1e-6


@pytest.mark.parametrize("size", [64, 96, 256, 512])
def test_the_payload_reads_back_exactly_within_the_psnr_budget(size: int) -> None:
    for seed in range(3):
        pixels = scene(size, seed)
        marked = wm.embed(pixels, PAYLOAD)
        assert psnr(marked, pixels) >= 38.5
        found = wm.decode(marked, search=False)
        assert found is not None and found.payload == PAYLOAD and found.scale == 1.0
        assert found.layout == ("g8" if size < 128 else "g16")


def test_non_square_images_and_aspect_changes() -> None:
    marked = wm.embed(scene(200, 3, width=300), PAYLOAD)
    assert wm.extract(marked) == PAYLOAD
    assert wm.extract(resize(marked, 240, 200)) == PAYLOAD


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda p: jpeg(p, 75), id="jpeg75"),
        pytest.param(lambda p: jpeg(p, 50), id="jpeg50"),
        pytest.param(lambda p: resize(p, 128, 128), id="resize50"),
        pytest.param(lambda p: resize(jpeg(p, 75), 128, 128), id="jpeg75-resize50"),
    ],
)
def test_lossy_edits_at_256_px(attack) -> None:
    marked = wm.embed(scene(256, 4), PAYLOAD)
    found = wm.decode(attack(marked))
    assert found is not None and found.payload == PAYLOAD


def test_a_crop_padded_back_in_place_is_masked_and_decoded() -> None:
    marked = wm.embed(scene(256, 5), PAYLOAD)
    padded = np.zeros_like(marked)
    padded[13:243, 13:243] = marked[13:243, 13:243]
    assert wm.extract(padded) == PAYLOAD


@pytest.mark.parametrize("keep", [0.9, 0.95])
def test_sync_finds_a_centred_crop_resized_back(keep: float) -> None:
    marked = wm.embed(scene(256, 6), PAYLOAD)
    cut = round(256 * (1 - keep) / 2)
    cropped = resize(marked[cut : 256 - cut, cut : 256 - cut], 256, 256)
    assert wm.decode(cropped, search=False) is None  # the grid has moved: the uncropped map does not read it
    found = wm.decode(cropped)
    assert found is not None and found.payload == PAYLOAD
    assert found.scale == pytest.approx((256 - 2 * cut) / 256, abs=0.01)


@pytest.mark.parametrize("contrast", [0.9, 1.1])
def test_sync_finds_a_contrast_change(contrast: float) -> None:
    marked = wm.embed(scene(256, 8), PAYLOAD)
    changed = np.clip(np.rint((marked.astype(np.float64) - 128) * contrast + 128), 0, 255).astype(np.uint8)
    found = wm.decode(changed)
    assert found is not None and found.payload == PAYLOAD and found.gain == pytest.approx(contrast, abs=0.03)


def test_a_crop_kept_at_its_size_is_found_too() -> None:
    marked = wm.embed(scene(512, 7), PAYLOAD)
    assert wm.extract(marked[26:486, 26:486]) == PAYLOAD


def test_embedding_refuses_small_images_and_bad_payloads() -> None:
    with pytest.raises(wm.WatermarkError, match="at least 64 px"):
        wm.embed(scene(63), PAYLOAD)
    with pytest.raises(wm.WatermarkError, match="exactly 8 bytes"):
        wm.embed(scene(64), b"short")
    assert wm.bit_accuracy(PAYLOAD, PAYLOAD) == 1.0
