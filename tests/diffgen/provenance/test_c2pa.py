from __future__ import annotations

import base64
import pickle
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from diffgen.provenance import c2pa as cs
from diffgen.provenance.png import decode_png, encode_png
from diffgen.provenance.record import TRAINED_ALGORITHMIC_MEDIA, png_text_chunks, read_png_provenance
from tests.diffgen.provenance.c2pa_certs import make_pki, other_key_pem
from tests.diffgen.provenance.png_chunks import build, chunks, flip_pixel_byte
from tests.diffgen.provenance.sample_record import sample_record

PIXELS = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture(scope="module")
def signer(pki) -> cs.C2paSigner:
    return cs.C2paSigner(cs.check_credentials(pki.chain_pem, pki.key_pem))


@pytest.fixture(scope="module")
def signed(signer) -> tuple[bytes, bytes]:
    """(unsigned, signed) PNG of the sample record."""
    png = encode_png(PIXELS, png_text_chunks(sample_record()))
    return png, cs.sign_png(png, sample_record(), signer)


def test_signed_png_verifies_as_trusted_against_its_ca(signed, pki) -> None:
    _, data = signed
    result = cs.verify_png(data, pki.ca_pem)
    assert result.present and result.valid and result.trusted, result.failures
    assert result.state == "Trusted"
    assert result.failures == ()
    assert result.provenance == sample_record().to_dict()
    assert result.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    assert result.soft_binding is not None and result.soft_binding["alg"] == cs.SOFT_BINDING_ALG
    assert cs.soft_binding_payload(result.soft_binding) == bytes.fromhex(sample_record().watermark_payload)
    assert "diffgen test signer" in result.signer


def test_signing_keeps_pixels_and_text_chunks(signed) -> None:
    png, data = signed
    assert [k for k, _ in chunks(data)].count(b"caBX") == 1
    pixels, _ = decode_png(data)
    assert np.array_equal(pixels, PIXELS)
    assert read_png_provenance(data) == read_png_provenance(png)


def test_no_thumbnail_and_small_growth(signed) -> None:
    png, data = signed
    # With the default thumbnail a 12 KB PNG grows by ~280 KB; the manifest alone is a few KB.
    assert len(data) - len(png) < 16_000
    assert b"c2pa.thumbnail" not in data


def test_untrusted_signer_is_valid_but_not_trusted(signed) -> None:
    _, data = signed
    for anchors in (None, make_pki().ca_pem):
        result = cs.verify_png(data, anchors)
        assert result.valid and not result.trusted
        assert [f.split(":")[0] for f in result.failures] == ["signingCredential.untrusted"]


def test_a_flipped_byte_makes_the_manifest_invalid(signed, pki) -> None:
    _, data = signed
    start = data.index(b"IDAT") + 4
    corrupt = bytearray(data)
    corrupt[start + 10] ^= 0x01
    result = cs.verify_png(bytes(corrupt), pki.ca_pem)
    assert result.present and not result.valid and result.state == "Invalid"
    assert any(f.startswith("assertion.dataHash.mismatch") for f in result.failures)


def test_edited_pixels_with_valid_png_crcs_are_caught(signed, pki) -> None:
    _, data = signed
    result = cs.verify_png(flip_pixel_byte(data), pki.ca_pem)
    assert not result.valid
    assert any("dataHash.mismatch" in f for f in result.failures)


def test_an_edited_assertion_is_caught(signed, pki) -> None:
    _, data = signed
    old = sample_record().prompt.encode()
    parts = [
        (k, body.replace(old, old.replace(b"rain", b"snow")) if k == b"caBX" else body) for k, body in chunks(data)
    ]
    forged = build(parts)
    assert forged != data
    result = cs.verify_png(forged, pki.ca_pem)
    assert not result.valid
    assert any(f.startswith("assertion.hashedURI.mismatch") and cs.PROVENANCE_LABEL in f for f in result.failures)


def test_unsigned_png_has_no_manifest() -> None:
    result = cs.verify_png(encode_png(PIXELS))
    assert not result.present and not result.valid and result.state is None


def test_a_signer_signs_many_images(signer, pki) -> None:
    for i in range(3):
        record = sample_record(record_id=f"record-{i}")
        data = cs.sign_png(encode_png(PIXELS, png_text_chunks(record)), record, signer)
        assert cs.verify_png(data, pki.ca_pem).provenance["record_id"] == f"record-{i}"


def test_a_signer_pickles_to_another_process_and_signs_there(signer, pki) -> None:
    clone = pickle.loads(pickle.dumps(signer))
    assert clone is not signer and clone.credentials == signer.credentials
    data = cs.sign_png(encode_png(PIXELS), sample_record(), clone)
    assert cs.verify_png(data, pki.ca_pem).trusted


def test_unwatermarked_record_has_no_soft_binding(signer, pki) -> None:
    record = sample_record(watermark_payload=None)
    result = cs.verify_png(cs.sign_png(encode_png(PIXELS), record, signer), pki.ca_pem)
    assert result.trusted and result.soft_binding is None
    assert result.provenance["watermark_payload"] is None


def test_credentials_load_from_uris(tmp_path, pki) -> None:
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem)
    (tmp_path / "key.pem").write_bytes(pki.key_pem)
    credentials = cs.load_credentials(str(tmp_path / "chain.pem"), f"file://{tmp_path}/key.pem")
    assert credentials.alg == "es256"
    assert "diffgen test signer" in credentials.signer
    assert b"PRIVATE KEY" not in repr(credentials).encode()
    with pytest.raises(cs.C2paConfigError, match=r"cannot read the private key at .*missing\.pem"):
        cs.load_credentials(str(tmp_path / "chain.pem"), str(tmp_path / "missing.pem"))


def test_a_key_that_does_not_match_the_certificate_is_refused(pki) -> None:
    with pytest.raises(cs.C2paConfigError, match="does not match the public key of certificate 1"):
        cs.check_credentials(pki.chain_pem, other_key_pem())


def test_an_expired_certificate_is_refused() -> None:
    now = datetime.now(UTC)
    expired = make_pki(not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    with pytest.raises(cs.C2paConfigError, match=r"certificate 1 \(.*diffgen test signer.*\) expired on"):
        cs.check_credentials(expired.chain_pem, expired.key_pem)
    future = make_pki(not_before=now + timedelta(days=1), not_after=now + timedelta(days=30))
    with pytest.raises(cs.C2paConfigError, match="is not valid before"):
        cs.check_credentials(future.chain_pem, future.key_pem)


def test_every_problem_is_reported_at_once() -> None:
    now = datetime.now(UTC)
    expired = make_pki(not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    with pytest.raises(cs.C2paConfigError) as info:
        cs.check_credentials(expired.chain_pem, other_key_pem())
    assert "expired" in str(info.value) and "does not match" in str(info.value)


def test_bad_chains_and_keys_are_refused(pki) -> None:
    with pytest.raises(cs.C2paConfigError, match="no PEM certificate"):
        cs.check_credentials(b"not a certificate", pki.key_pem)
    with pytest.raises(cs.C2paConfigError, match="not a PEM private key"):
        cs.check_credentials(pki.chain_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(cs.C2paConfigError, match="not a PEM private key"):
        cs.check_credentials(pki.chain_pem, pki.chain_pem)
    leaf, ca = pki.chain_pem.split(b"-----END CERTIFICATE-----\n")[:2]
    reordered = ca + b"-----END CERTIFICATE-----\n" + leaf + b"-----END CERTIFICATE-----\n"
    with pytest.raises(cs.C2paConfigError, match="did not issue certificate 1"):
        cs.check_credentials(reordered, pki.key_pem)
    key = serialization.load_pem_private_key(pki.key_pem, None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(cs.C2paConfigError, match="encrypted"):
        cs.check_credentials(pki.chain_pem, encrypted)


def test_key_types_map_to_c2pa_algorithms() -> None:
    edwards = make_pki(leaf_key=ed25519.Ed25519PrivateKey.generate())
    credentials = cs.check_credentials(edwards.chain_pem, edwards.key_pem)
    assert credentials.alg == "ed25519"
    data = cs.sign_png(encode_png(PIXELS), sample_record(), cs.C2paSigner(credentials))
    assert cs.verify_png(data, edwards.ca_pem).trusted
    weak = make_pki(leaf_key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(cs.C2paConfigError, match="1024-bit RSAPrivateKey cannot sign"):
        cs.check_credentials(weak.chain_pem, weak.key_pem)


def test_a_self_signed_certificate_is_refused(pki) -> None:
    ca_only = pki.chain_pem[pki.chain_pem.index(b"-----BEGIN CERTIFICATE-----", 10) :]
    ca_key = ec.generate_private_key(ec.SECP256R1())  # whatever the key, self-signed fails first
    key_pem = ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(cs.C2paConfigError, match="self-signed"):
        cs.check_credentials(ca_only, key_pem)


def test_bad_trust_anchors_are_refused(signed) -> None:
    with pytest.raises(cs.C2paConfigError, match="trust anchors"):
        cs.verify_png(signed[1], b"garbage")


def test_soft_binding_payload_ignores_other_algorithms() -> None:
    value = base64.b64encode(b"12345678").decode()
    assert (
        cs.soft_binding_payload({"alg": cs.SOFT_BINDING_ALG, "blocks": [{"scope": {}, "value": value}]}) == b"12345678"
    )
    assert cs.soft_binding_payload({"alg": "com.example.other", "blocks": [{"scope": {}, "value": value}]}) is None
    assert cs.soft_binding_payload({"alg": cs.SOFT_BINDING_ALG, "blocks": []}) is None
    assert cs.soft_binding_payload(None) is None


def test_sign_time_and_size_growth(signer, pki, record_property) -> None:
    record = sample_record(width=512, height=512)
    pixels = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    png = encode_png(pixels, png_text_chunks(record))
    start = time.perf_counter()
    data = cs.sign_png(png, record, signer)
    elapsed = time.perf_counter() - start
    record_property("sign_seconds", elapsed)
    record_property("size_growth_bytes", len(data) - len(png))
    assert cs.verify_png(data, pki.ca_pem).trusted
    assert elapsed < 2.0
    assert len(data) - len(png) < 16_000
