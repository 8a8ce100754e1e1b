from __future__ import annotations

import hashlib
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.numpy import save_file

from diffgen.provenance import record as pv
from diffgen.provenance.png import decode_png, encode_png
from tests.diffgen.provenance.png_chunks import itxt
from tests.diffgen.provenance.sample_record import sample_record

PIXELS = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_record_json_is_canonical_and_round_trips() -> None:
    record = sample_record()
    text = record.to_json()
    assert pv.ProvenanceRecord.from_json(text) == record
    parsed = json.loads(text)
    assert text == json.dumps(parsed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert "東京" in text  # UTF-8 kept, not \u-escaped
    assert parsed["seed"] == 2**63 - 5
    assert parsed["created_at"] == "2026-11-22T03:04:05.678000Z"
    assert parsed["provenance_version"] == 2


def test_the_payload_commits_to_the_ids_and_to_how_the_image_was_made() -> None:
    record = sample_record()
    payload = bytes.fromhex(record.watermark_payload)
    assert pv.watermark_payload_for(record) == payload and pv.payload_disagreement(record, payload) == []
    for field, value in [("prompt", "a dog"), ("seed", 7), ("model_id", "other/model"), ("steps", 21)]:
        edited = record.model_copy(update={field: value})
        assert pv.payload_disagreement(edited, payload) == ["prompt, seed, model or another bound field"], field
    for field in ("run_id", "record_id"):
        edited = record.model_copy(update={field: "x"})
        assert pv.payload_disagreement(edited, payload)[0] == "run_id or record_id", field
    later = record.model_copy(update={"git_commit": "1" * 40, "created_at": datetime(2027, 1, 1, tzinfo=UTC)})
    assert pv.watermark_payload_for(later) == payload  # a retry's time and code do not change the image


def test_created_at_must_be_aware_and_is_stored_in_utc() -> None:
    with pytest.raises(ValidationError, match="created_at"):
        sample_record(created_at=datetime(2026, 1, 1, 12, 0))
    shifted = sample_record(created_at=datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))))
    assert shifted.created_at.utcoffset() == timedelta(0)
    assert shifted.created_at.hour == 10


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"watermark_payload": "ABCDEF0123456789"}, "watermark_payload"),
        ({"watermark_payload": "abc"}, "watermark_payload"),
        ({"model_weights_sha256": "xyz"}, "model_weights_sha256"),
        ({"control_image_uris": ["a.png"], "control_image_sha256s": ["not-a-hash"]}, "control_image_sha256s"),
        ({"init_image_uris": ["a.png", "b.png"], "init_image_sha256s": ["0" * 64]}, "init_image_sha256s"),
        ({"init_image_sha256s": ["0" * 64]}, "init_image_sha256s"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_records_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        sample_record(**overrides)


def test_control_and_init_images_are_recorded() -> None:
    record = sample_record(
        control_image_uris=["s3://b/edges/1.png"],
        control_image_sha256s=[hashlib.sha256(b"edges").hexdigest()],
        init_image_uris=["s3://b/init/1.png"],
    )
    parsed = json.loads(record.to_json())
    assert parsed["control_image_uris"] == ["s3://b/edges/1.png"]
    assert parsed["init_image_sha256s"] is None


def test_xmp_packet_declares_ai_generated_media() -> None:
    record = sample_record(model_id='org/model "x" & <y>')
    packet = pv.xmp_packet(record)
    assert packet.startswith('<?xpacket begin="\ufeff"') and packet.endswith('<?xpacket end="r"?>')
    root = ET.fromstring(packet[packet.index("<x:xmpmeta") : packet.rindex("</x:xmpmeta>") + 12])
    ns = pv.NAMESPACES
    description = root.find(f"{{{ns['rdf']}}}RDF/{{{ns['rdf']}}}Description")
    assert description is not None
    assert description.get(f"{{{ns['Iptc4xmpExt']}}}DigitalSourceType") == pv.TRAINED_ALGORITHMIC_MEDIA
    assert description.get(f"{{{ns['Iptc4xmpExt']}}}AISystemUsed") == 'org/model "x" & <y>'
    assert description.get(f"{{{ns['xmp']}}}CreatorTool") == pv.CREATOR_TOOL
    creators = description.findall(f"{{{ns['dc']}}}creator/{{{ns['rdf']}}}Seq/{{{ns['rdf']}}}li")
    assert [c.text for c in creators] == [pv.CREATOR_TOOL]


def test_parse_xmp_reads_attribute_and_element_properties() -> None:
    record = sample_record()
    fields = pv.parse_xmp(pv.xmp_packet(record))
    assert fields["Iptc4xmpExt:DigitalSourceType"] == pv.TRAINED_ALGORITHMIC_MEDIA
    assert fields["diffgen:RecordId"] == record.record_id
    assert fields["diffgen:WatermarkPayload"] == record.watermark_payload
    assert fields["Iptc4xmpExt:AISystemVersionUsed"] == record.model_revision
    element_form = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        f"<Iptc4xmpExt:DigitalSourceType>{pv.TRAINED_ALGORITHMIC_MEDIA}</Iptc4xmpExt:DigitalSourceType>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    assert pv.parse_xmp(element_form) == {"Iptc4xmpExt:DigitalSourceType": pv.TRAINED_ALGORITHMIC_MEDIA}
    with pytest.raises(pv.ProvenanceError, match="not well-formed"):
        pv.parse_xmp("<x:xmpmeta><unclosed></x:xmpmeta>")


def test_png_chunks_are_uncompressed_itxt_with_the_standard_xmp_key() -> None:
    record = sample_record()
    png = encode_png(PIXELS, pv.png_text_chunks(record))
    raw = itxt(png)
    assert set(raw) == {"diffgen:provenance", "XML:com.adobe.xmp"}
    xmp = raw["XML:com.adobe.xmp"]
    # XMP spec part 3: keyword XML:com.adobe.xmp, no compression, empty language and translated keyword.
    assert (xmp["compressed"], xmp["method"], xmp["language"], xmp["translated"]) == (0, 0, "", "")
    assert xmp["text"] == pv.xmp_packet(record)
    assert raw["diffgen:provenance"]["text"] == record.to_json()


def test_read_png_provenance_round_trips_through_pillow() -> None:
    record = sample_record()
    png = encode_png(PIXELS, pv.png_text_chunks(record))
    found, xmp = pv.read_png_provenance(png)
    assert found == record.to_dict()
    assert pv.ProvenanceRecord.model_validate(found) == record
    assert xmp == pv.xmp_packet(record)
    pixels, _ = decode_png(png)
    assert np.array_equal(pixels, PIXELS)


def test_read_png_provenance_without_chunks_and_with_bad_input() -> None:
    assert pv.read_png_provenance(encode_png(PIXELS)) == (None, None)
    with pytest.raises(pv.ProvenanceError, match="not a readable PNG"):
        pv.read_png_provenance(b"GIF89a not a png")
    with pytest.raises(pv.ProvenanceError, match="not JSON"):
        pv.read_png_provenance(encode_png(PIXELS, {pv.PROVENANCE_KEY: "{broken"}))
    with pytest.raises(pv.ProvenanceError, match="not an object"):
        pv.read_png_provenance(encode_png(PIXELS, {pv.PROVENANCE_KEY: "[1, 2]"}))


def _model_folder(root) -> None:
    (root / "unet").mkdir(parents=True)
    (root / "vae").mkdir()
    save_file({"w": np.arange(6, dtype=np.float32)}, str(root / "unet" / "model.safetensors"))
    save_file({"w": np.ones(3, dtype=np.float32)}, str(root / "vae" / "model.safetensors"))
    (root / "model_index.json").write_text("{}")
    (root / "unet" / "model.bin").write_bytes(b"ignored: not safetensors")


def test_weights_hash_covers_relative_paths_and_file_hashes(tmp_path) -> None:
    _model_folder(tmp_path / "m")
    root = tmp_path / "m"
    expected = hashlib.sha256()
    for rel in ("unet/model.safetensors", "vae/model.safetensors"):
        expected.update(f"{rel}\x00{hashlib.sha256((root / rel).read_bytes()).hexdigest()}\n".encode())
    assert pv.weights_hash(root) == expected.hexdigest()
    # The same files elsewhere hash the same; a renamed file does not.
    _model_folder(tmp_path / "copy")
    assert pv.weights_hash(tmp_path / "copy") == pv.weights_hash(root)
    (tmp_path / "copy" / "vae" / "model.safetensors").rename(tmp_path / "copy" / "vae" / "other.safetensors")
    assert pv.weights_hash(tmp_path / "copy") != pv.weights_hash(root)


def test_weights_hash_is_cached_until_a_file_changes(tmp_path, monkeypatch) -> None:
    root = tmp_path / "m"
    _model_folder(root)
    calls = []
    real = hashlib.file_digest
    monkeypatch.setattr(pv.hashlib, "file_digest", lambda f, d: calls.append(f) or real(f, d))
    first = pv.weights_hash(root)
    assert pv.weights_hash(str(root)) == first
    assert len(calls) == 2
    target = root / "vae" / "model.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(target))
    os.utime(target, ns=(1, 1))
    assert pv.weights_hash(root) != first
    assert len(calls) == 4


def test_weights_hash_errors(tmp_path) -> None:
    with pytest.raises(pv.ProvenanceError, match="does not exist"):
        pv.weights_hash(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(pv.ProvenanceError, match=r"no \*\.safetensors"):
        pv.weights_hash(tmp_path / "empty")


def test_git_commit_names_the_checkout() -> None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=os.path.dirname(pv.__file__), capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = None
    assert pv.git_commit() == head
