"""The write stage's provenance: watermark, PNG text + XMP, C2PA, read back from the written bytes."""

import numpy as np
import pyarrow as pa
import pytest

from diffgen.dataset import storage
from diffgen.dataset.records import expand
from diffgen.provenance import watermark
from diffgen.provenance.c2pa import load_credentials
from diffgen.provenance.png import decode_png
from diffgen.provenance.record import ProvenanceRecord, read_png_provenance, watermark_payload_for
from diffgen.provenance.verify import verify_image
from diffgen.schemas.job import JobSpec
from diffgen.schemas.record import RecordStatus
from diffgen.stages.generate import GenerateStage
from diffgen.stages.write import MIN_WATERMARK_PSNR, WriteStage, psnr
from tests.diffgen.provenance.c2pa_certs import make_pki


def _spec(tiny_sd, size, **provenance):
    return JobSpec.model_validate(
        {
            "run_id": "prov",
            "model": {"id": str(tiny_sd)},
            "sampler": {"steps": 2, "guidance_scale": 1.0, "width": size, "height": size},
            "compute": {"batch_size": 2},
            "provenance": provenance,
        }
    )


def _generated(spec):
    records = expand(pa.Table.from_pylist([{"id": "a", "prompt": "a red square", "num_images": 2}]), spec)
    stage = GenerateStage(spec)
    stage.setup()
    return stage(records)


def test_every_written_image_carries_its_watermark_and_provenance(tiny_sd, tmp_path):
    spec = _spec(tiny_sd, 64)
    index = WriteStage(spec, str(tmp_path), "prov")(_generated(spec))
    for row in index.to_pylist():
        assert row["status"] == "written" and row["watermark_ok"] is True
        data = storage.read_bytes(row["image_uri"])
        record, xmp = read_png_provenance(data)
        assert watermark_payload_for(ProvenanceRecord.model_validate(record)).hex() == row["watermark_payload"]
        assert record["record_id"] == row["record_id"] and record["watermark_payload"] == row["watermark_payload"]
        assert "trainedAlgorithmicMedia" in xmp
        assert len(record["model_weights_sha256"]) == 64
        report = verify_image(data)
        assert report.ok, report.summary_lines()


def test_images_too_small_to_mark_are_rejected_unless_allowed(tiny_sd, tmp_path):
    spec = _spec(tiny_sd, 32)
    index = WriteStage(spec, str(tmp_path / "strict"), "prov")(_generated(spec))
    assert set(index.column("status").to_pylist()) == {"rejected"}
    assert all(e.startswith("watermark_too_small") for e in index.column("error").to_pylist())
    lenient = _spec(tiny_sd, 32, allow_unwatermarked=True)
    index = WriteStage(lenient, str(tmp_path / "lenient"), "prov")(_generated(lenient))
    assert index.column("status").to_pylist() == ["written", "written"]
    assert index.column("watermark_ok").to_pylist() == [False, False]
    assert index.column("watermark_payload").to_pylist() == [None, None]


def test_c2pa_signed_images_verify_against_the_test_ca(tiny_sd, tmp_path):
    pki = make_pki()
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem)
    (tmp_path / "key.pem").write_bytes(pki.key_pem)
    spec = _spec(tiny_sd, 64, c2pa={"cert_chain": str(tmp_path / "chain.pem"), "private_key": str(tmp_path / "key.pem")})
    credentials = load_credentials(spec.provenance.c2pa.cert_chain, spec.provenance.c2pa.private_key)
    index = WriteStage(spec, str(tmp_path / "out"), "prov", credentials)(_generated(spec))
    assert index.column("c2pa_valid").to_pylist() == [True, True]
    data = bytearray(storage.read_bytes(index.column("image_uri")[0].as_py()))
    report = verify_image(bytes(data), trust_anchors_pem=pki.ca_pem, require_c2pa=True)
    assert report.ok, report.summary_lines()
    data[len(data) // 2] ^= 0xFF
    assert not verify_image(bytes(data), trust_anchors_pem=pki.ca_pem, require_c2pa=True).ok


_SATURATED = np.array([[0, 0, 255], [255, 255, 0], [255, 0, 0], [0, 255, 255], [255, 0, 255], [0, 255, 0]], np.uint8)


def _saturated_patches(seed: int) -> np.ndarray:
    """A 64x64 background with up to three patches of fully saturated colour, which cannot carry a chroma change:
    the kind of image whose mark may not read back at once."""
    r = np.random.default_rng(seed)
    img = np.full((64, 64, 3), r.integers(0, 256, 3), np.uint8)
    for _ in range(r.integers(1, 4)):
        y, x = r.integers(0, 48, 2)
        h, w = r.integers(16, 48, 2)
        img[y : y + h, x : x + w] = _SATURATED[r.integers(0, 6)]
    return img


def test_a_mark_that_does_not_read_back_is_embedded_again_or_fails_as_replaceable(tiny_sd, monkeypatch):
    """Image 0 reads back at once; image 14 after a second embedding (about 40 dB); image 1 never within
    WATERMARK_EMBEDS: a replaceable failure. Under a PSNR floor no second embedding meets, image 14 fails too."""
    from diffgen.stages import write

    stage = WriteStage(_spec(tiny_sd, 64), "unused", "prov")
    payload = bytes(range(1, 9))
    marked, got, embeds = stage._mark(_saturated_patches(0), payload)
    assert (got, embeds) == (payload, 1) and watermark.extract(marked, search=False) == payload
    image = _saturated_patches(14)
    assert watermark.extract(watermark.embed(image, payload), search=False) != payload
    marked, got, embeds = stage._mark(image, payload)
    assert (got, embeds) == (payload, 2) and watermark.extract(marked, search=False) == payload
    assert psnr(marked, image) >= MIN_WATERMARK_PSNR
    with pytest.raises(write._RowProblem) as never:
        stage._mark(_saturated_patches(1), payload)
    assert (never.value.status, never.value.replaceable) == (RecordStatus.FAILED, True)
    assert never.value.error.startswith("watermark_verify_failed: ") and "embedding(s)" in never.value.error
    monkeypatch.setattr(write, "MIN_WATERMARK_PSNR", 60.0)
    with pytest.raises(write._RowProblem, match="after 1 embedding"):
        stage._mark(image, payload)


def test_the_index_phash_is_the_delivered_pngs_as_imagehash_reads_it(tiny_sd, tmp_path):
    """QC hashes the unmarked pixels; the index's `phash` is taken again after the watermark, from what is written."""
    import imagehash
    from PIL import Image

    from diffgen.metrics.image_checks import phash

    spec = _spec(tiny_sd, 64)
    generated = _generated(spec)
    unmarked = [phash(np.frombuffer(p, np.uint8).reshape(64, 64, 3)) for p in generated.column("pixels").to_pylist()]
    generated = generated.append_column("phash", pa.array(unmarked, pa.uint64()))
    index = WriteStage(spec, str(tmp_path), "prov")(generated)
    for row in index.to_pylist():
        with Image.open(row["image_uri"]) as delivered:
            assert row["phash"] == int(str(imagehash.phash(delivered)), 16)
