from __future__ import annotations

import json

import numpy as np
import pytest

from diffgen.provenance import c2pa as cs
from diffgen.provenance import watermark as wm
from diffgen.provenance.png import encode_png
from diffgen.provenance.record import PROVENANCE_KEY, XMP_KEY, png_text_chunks, xmp_packet
from diffgen.provenance.verify import verify_image
from tests.diffgen.provenance.c2pa_certs import make_pki
from tests.diffgen.provenance.png_chunks import flip_pixel_byte
from tests.diffgen.provenance.sample_record import sample_record

SIZE = 96


def _pixels(seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = np.stack([30 + 200 * x, 50 + 180 * y, 120 + 60 * np.sin(6 * x * y)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture(scope="module")
def signer(pki) -> cs.C2paSigner:
    return cs.C2paSigner(cs.check_credentials(pki.chain_pem, pki.key_pem))


def write(record=None, *, signer=None, sign_record=None, pixels=None, text=None) -> bytes:
    """What the write stage does: watermark, PNG with provenance chunks, optional C2PA signature."""
    record = record or sample_record(width=SIZE, height=SIZE)
    pixels = _pixels() if pixels is None else pixels
    if record.watermark_payload is not None:
        pixels = wm.embed(pixels, bytes.fromhex(record.watermark_payload))
    png = encode_png(pixels, png_text_chunks(record) if text is None else text)
    return cs.sign_png(png, sign_record or record, signer) if signer else png


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def detail(report, name: str) -> str:
    return next(c.detail for c in report.checks if c.name == name)


def test_a_signed_watermarked_image_passes_every_check(signer, pki) -> None:
    report = verify_image(write(signer=signer), pki.ca_pem)
    assert statuses(report) == {
        "provenance": "pass",
        "xmp": "pass",
        "watermark": "pass",
        "c2pa": "pass",
        "c2pa-record": "pass",
        "c2pa-watermark": "pass",
    }, report.summary_lines()
    assert report.ok
    assert report.watermark_bit_accuracy == 1.0 and report.watermark_confidence == 1.0
    assert report.watermark_payload == sample_record(width=SIZE, height=SIZE).watermark_payload
    lines = report.summary_lines()
    assert lines[-1].startswith("OK")
    assert any(line.startswith("PASS") and "read exactly" in line for line in lines)
    json.dumps(report.to_dict())


def test_an_unsigned_image_passes_unless_c2pa_is_required() -> None:
    data = write()
    report = verify_image(data)
    assert report.ok and statuses(report)["c2pa"] == "skip"
    strict = verify_image(data, require_c2pa=True)
    assert not strict.ok and statuses(strict)["c2pa"] == "fail"
    assert strict.summary_lines()[-1] == "FAILED: 1 check(s) failed"


def test_signer_trust_depends_on_the_anchors(signer) -> None:
    data = write(signer=signer)
    without = verify_image(data)
    assert without.ok and statuses(without)["c2pa"] == "warn"
    foreign = verify_image(data, make_pki().ca_pem)
    assert not foreign.ok and statuses(foreign)["c2pa"] == "fail"


def test_edited_pixels_break_the_signature(signer, pki) -> None:
    report = verify_image(flip_pixel_byte(write(signer=signer)), pki.ca_pem)
    assert not report.ok
    assert statuses(report)["c2pa"] == "fail"
    assert "dataHash.mismatch" in detail(report, "c2pa")


def test_a_record_moved_onto_another_image_is_caught() -> None:
    # Pixels marked for one record, text chunks claiming another.
    marked_for = sample_record(width=SIZE, height=SIZE)
    claimed = sample_record(width=SIZE, height=SIZE, record_id="ffffffffffffffffffffffff")
    data = encode_png(wm.embed(_pixels(), bytes.fromhex(marked_for.watermark_payload)), png_text_chunks(claimed))
    report = verify_image(data)
    assert not report.ok
    assert statuses(report)["watermark"] == "fail"
    assert report.watermark_payload == marked_for.watermark_payload


def test_a_manifest_for_a_different_record_is_caught(signer, pki) -> None:
    record = sample_record(width=SIZE, height=SIZE)
    other = record.model_copy(update={"prompt": "something else", "seed": 1})
    report = verify_image(write(record, signer=signer, sign_record=other), pki.ca_pem)
    assert statuses(report)["c2pa"] == "pass"
    assert statuses(report)["c2pa-record"] == "fail"
    assert "prompt" in detail(report, "c2pa-record") and "seed" in detail(report, "c2pa-record")
    assert not report.ok


def test_a_record_whose_payload_is_not_derived_from_its_ids_fails() -> None:
    record = sample_record(width=SIZE, height=SIZE, watermark_payload="00" * 8)
    report = verify_image(write(record))
    assert statuses(report)["watermark"] == "fail"
    assert "not the one its fields give" in detail(report, "watermark")


def test_an_unwatermarked_image_only_warns() -> None:
    record = sample_record(width=SIZE, height=SIZE, watermark_payload=None)
    report = verify_image(write(record))
    assert report.ok and statuses(report)["watermark"] == "warn"
    small = sample_record(width=32, height=32, watermark_payload=None)
    report = verify_image(write(small, pixels=_pixels()[:32, :32]))
    assert report.ok and statuses(report)["watermark"] == "warn"


def test_a_small_image_claiming_a_watermark_fails() -> None:
    record = sample_record(width=32, height=32)
    data = encode_png(_pixels()[:32, :32], png_text_chunks(record))
    report = verify_image(data)
    assert statuses(report)["watermark"] == "fail" and not report.ok


def test_mismatched_xmp_and_size_are_caught() -> None:
    record = sample_record(width=SIZE, height=SIZE)
    other = sample_record(width=SIZE, height=SIZE, record_id="eeeeeeeeeeeeeeeeeeeeeeee")
    text = {PROVENANCE_KEY: record.to_json(), XMP_KEY: xmp_packet(other)}
    report = verify_image(write(record, text=text))
    assert statuses(report)["xmp"] == "fail"
    assert "record id" in detail(report, "xmp")
    wrong_size = sample_record(width=SIZE, height=SIZE + 1)
    data = encode_png(wm.embed(_pixels(), bytes.fromhex(wrong_size.watermark_payload)), png_text_chunks(wrong_size))
    assert statuses(verify_image(data))["provenance"] == "fail"


def test_a_png_without_diffgen_metadata_fails() -> None:
    report = verify_image(encode_png(_pixels()))
    assert statuses(report) == {"provenance": "fail", "xmp": "fail", "watermark": "skip", "c2pa": "skip"}
    assert not report.ok


def test_an_invalid_record_names_its_fields() -> None:
    bad = json.loads(sample_record(width=SIZE, height=SIZE).to_json())
    bad["steps"] = 0
    del bad["seed"]
    report = verify_image(encode_png(_pixels(), {PROVENANCE_KEY: json.dumps(bad)}))
    assert "steps" in detail(report, "provenance") and "seed" in detail(report, "provenance")
    assert report.record == bad


def test_bytes_that_are_not_a_png() -> None:
    report = verify_image(b"definitely not a png")
    assert not report.ok
    assert statuses(report) == {"png": "fail", "c2pa": "skip"}


def test_bad_trust_anchors_raise(signer) -> None:
    with pytest.raises(cs.C2paConfigError, match="trust anchors"):
        verify_image(write(signer=signer), b"not pem")


@pytest.mark.parametrize(
    "field, value",
    [("prompt", "a dog on a skateboard"), ("seed", 12345), ("model_id", "someone/else"), ("run_id", "run-forged")],
)
def test_edited_metadata_is_flagged_without_c2pa(field: str, value) -> None:
    """The text chunks say something else than what the pixels were marked for: the payload the edited
    record implies no longer matches the one in the pixels, whether or not the editor also updated it."""
    original = sample_record(width=SIZE, height=SIZE)
    pixels = wm.embed(_pixels(), bytes.fromhex(original.watermark_payload))
    edited = original.model_copy(update={field: value})
    consistent = sample_record(width=SIZE, height=SIZE, **{field: value})  # payload re-derived by the editor
    for claimed in (edited, consistent):
        report = verify_image(encode_png(pixels, png_text_chunks(claimed)))
        assert not report.ok and statuses(report)["watermark"] == "fail", report.summary_lines()
        which = "run_id or record_id" if field == "run_id" else "prompt, seed, model"
        assert which in detail(report, "watermark")


def test_an_image_of_the_earlier_scheme_still_verifies() -> None:
    from diffgen.provenance import watermark_v1

    record = sample_record(width=SIZE, height=SIZE, provenance_version=1)
    data = encode_png(watermark_v1.embed(_pixels(), bytes.fromhex(record.watermark_payload)), png_text_chunks(record))
    report = verify_image(data)
    assert report.ok and statuses(report)["watermark"] == "pass", report.summary_lines()
    assert "64/64 bits" in detail(report, "watermark")
    assert not verify_image(encode_png(_pixels(), png_text_chunks(record))).ok
