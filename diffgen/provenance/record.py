"""The provenance record of one image, and how it travels inside the PNG.

Two text chunks carry it, both iTXt (UTF-8, uncompressed):
  - `diffgen:provenance`: the full record as canonical JSON, for diffgen and anyone else;
  - `XML:com.adobe.xmp`: an XMP packet (the PNG key Adobe's XMP spec, part 3, defines) that
    tells generic tools the image is AI-generated: IPTC DigitalSourceType
    `trainedAlgorithmicMedia`, the creator tool and the model, plus the record id and
    watermark payload so the packet can be matched to the record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import diffgen
from diffgen.provenance.png import decode_png
from diffgen.schemas.record import IpAdapterUse, LoraUse, TextualInversionUse

log = logging.getLogger(__name__)

PROVENANCE_KEY = "diffgen:provenance"
XMP_KEY = "XML:com.adobe.xmp"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CREATOR_TOOL = f"diffgen {diffgen.__version__}"

NAMESPACES = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "diffgen": "urn:diffgen:xmp:1.0/",
}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PAYLOAD_HEX = re.compile(r"^[0-9a-f]{16}$")


class ProvenanceError(ValueError):
    """Provenance that cannot be built or read; the message names what is wrong."""


class ProvenanceRecord(BaseModel):
    """Everything needed to say where one image came from and to regenerate it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provenance_version: Literal[1, 2] = Field(
        default=2, description="2: watermark scheme 2 whose payload commits to this record (`watermark_payload_for`)."
    )
    record_id: str = Field(min_length=1)
    sample_index: int = Field(ge=0)
    run_id: str = Field(min_length=1)
    manifest_uri: str | None = None
    manifest_row_id: str = Field(description="The manifest row's `id`.")
    model_id: str = Field(min_length=1)
    model_revision: str | None = None
    model_weights_sha256: str | None = Field(default=None, description="`weights_hash` of the model folder.")
    loras: list[LoraUse] | None = Field(default=None, description="LoRA adapters applied: name, file, weight, sha256.")
    textual_inversions: list[TextualInversionUse] | None = Field(
        default=None, description="Textual-inversion embeddings loaded: token, file, sha256."
    )
    ip_adapters: list[IpAdapterUse] | None = Field(
        default=None, description="IP-Adapters applied: weights file and sha256, image encoder and hash, scale."
    )
    ip_adapter_image_uri: str | None = Field(default=None, description="The image prompt, when the row had one.")
    ip_adapter_image_sha256: str | None = None
    model_family: str | None = Field(
        default=None, description="The diffusers pipeline class, e.g. StableDiffusionPipeline."
    )
    scheduler: str
    scheduler_options: dict[str, bool | int | float | str] | None = Field(
        default=None, description="The job's sampler.scheduler_options, on top of the model's scheduler config."
    )
    steps: int = Field(ge=1)
    guidance_scale: float = Field(ge=0.0)
    seed: int = Field(ge=0, lt=2**63)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    prompt: str
    negative_prompt: str = ""
    control_image_uris: list[str] | None = None
    control_image_sha256s: list[str] | None = None
    init_image_uris: list[str] | None = None
    init_image_sha256s: list[str] | None = None
    diffgen_version: str = diffgen.__version__
    git_commit: str | None = None
    created_at: datetime
    watermark_payload: str | None = Field(default=None, description="16 hex characters; null if not watermarked.")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a timezone (use datetime.now(UTC))")
        return v.astimezone(UTC)

    @field_validator("model_weights_sha256")
    @classmethod
    def _weights_hex(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v):
            raise ValueError("must be 64 lowercase hex characters")
        return v

    @field_validator("control_image_sha256s", "init_image_sha256s")
    @classmethod
    def _sha256_list(cls, v: list[str] | None) -> list[str] | None:
        bad = [s for s in v or [] if not _SHA256.match(s)]
        if bad:
            raise ValueError(f"not a lowercase hex sha256: {bad[0]!r}")
        return v

    @field_validator("watermark_payload")
    @classmethod
    def _payload_hex(cls, v: str | None) -> str | None:
        if v is not None and not _PAYLOAD_HEX.match(v):
            raise ValueError("must be 16 lowercase hex characters (8 bytes)")
        return v

    @model_validator(mode="after")
    def _hashes_pair_with_uris(self) -> ProvenanceRecord:
        for kind in ("control_image", "init_image"):
            uris, hashes = getattr(self, f"{kind}_uris"), getattr(self, f"{kind}_sha256s")
            if hashes is not None and (uris is None or len(uris) != len(hashes)):
                raise ValueError(f"{kind}_sha256s needs one hash per entry of {kind}_uris")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON types: what the PNG chunk and the C2PA assertion hold."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, UTF-8 text kept as is."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ProvenanceRecord:
        return cls.model_validate_json(text)


# What the watermark payload of a version-2 record commits to: everything that says which image this is and
# how it was made. Left out: the payload itself, and what a retry of the same record may change (time, code).
IDENTITY_FIELDS = ("run_id", "record_id")
BOUND_FIELDS = (
    "sample_index", "manifest_uri", "manifest_row_id", "model_id", "model_revision", "model_weights_sha256",
    "loras", "model_family", "scheduler", "steps", "guidance_scale", "seed", "width", "height", "prompt",
    "negative_prompt", "control_image_uris", "control_image_sha256s", "init_image_uris", "init_image_sha256s",
)  # fmt: skip


def watermark_payload_for(record: ProvenanceRecord) -> bytes:
    """The 8-byte watermark payload of a version-2 record: 5 bytes of sha256 over run id and record id (what
    finds the image's row) and 3 bytes of sha256 over the `BOUND_FIELDS` (what binds the text to the pixels).

    An edit of any of these fields in the PNG text changes the payload the record implies, so it no longer
    matches the one in the pixels (missed with probability 2^-24 for a bound field, 2^-40 for an id)."""
    data = record.to_dict()
    identity = hashlib.sha256(_canonical(["diffgen-watermark-id", *(data[k] for k in IDENTITY_FIELDS)])).digest()
    bound = hashlib.sha256(_canonical(["diffgen-watermark-binding", {k: data[k] for k in BOUND_FIELDS}])).digest()
    return identity[:5] + bound[:3]


def payload_disagreement(record: ProvenanceRecord, payload: bytes) -> list[str]:
    """The parts of a version-2 record that do not give `payload` (empty when it does): its ids (the first 5
    bytes) and the fields bound to the pixels (the last 3), each in words."""
    implied = watermark_payload_for(record)
    parts = []
    if implied[:5] != payload[:5]:
        parts.append("run_id or record_id")
    if implied[5:] != payload[5:]:
        parts.append("prompt, seed, model or another bound field")
    return parts


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def xmp_packet(record: ProvenanceRecord) -> str:
    """An XMP packet marking the image as made by a trained model, with diffgen as the creator tool."""
    fields = {
        "Iptc4xmpExt:DigitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "Iptc4xmpExt:AISystemUsed": record.model_id,
        "xmp:CreatorTool": CREATOR_TOOL,
        "xmp:CreateDate": record.created_at.isoformat(),
        "diffgen:RecordId": record.record_id,
        "diffgen:RunId": record.run_id,
    }
    if record.model_revision is not None:
        fields["Iptc4xmpExt:AISystemVersionUsed"] = record.model_revision
    if record.watermark_payload is not None:
        fields["diffgen:WatermarkPayload"] = record.watermark_payload
    namespaces = "".join(f"\n    xmlns:{p}={quoteattr(uri)}" for p, uri in NAMESPACES.items() if p not in ("x", "rdf"))
    attributes = "".join(f"\n    {name}={quoteattr(value)}" for name, value in fields.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="{NAMESPACES["x"]}">\n'
        f' <rdf:RDF xmlns:rdf="{NAMESPACES["rdf"]}">\n'
        f'  <rdf:Description rdf:about=""{namespaces}{attributes}>\n'
        f"   <dc:creator><rdf:Seq><rdf:li>{escape(CREATOR_TOOL)}</rdf:li></rdf:Seq></dc:creator>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )


def parse_xmp(packet: str) -> dict[str, str]:
    """The simple properties of an XMP packet's descriptions as `prefix:Name` -> value.

    Properties written as attributes or as plain elements are both read; prefixes are
    those of `NAMESPACES` (unknown namespaces keep their `{uri}` form).
    """
    start, end = packet.find("<x:xmpmeta"), packet.rfind("</x:xmpmeta>")
    body = packet[start : end + len("</x:xmpmeta>")] if start >= 0 and end > start else packet
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise ProvenanceError(f"XMP packet is not well-formed XML: {e}") from None
    prefixes = {f"{{{uri}}}": p for p, uri in NAMESPACES.items()}

    def short(tag: str) -> str:
        for uri, prefix in prefixes.items():
            if tag.startswith(uri):
                return f"{prefix}:{tag[len(uri) :]}"
        return tag

    found: dict[str, str] = {}
    for description in root.iter(f"{{{NAMESPACES['rdf']}}}Description"):
        for name, value in description.attrib.items():
            if not name.startswith(f"{{{NAMESPACES['rdf']}}}"):
                found[short(name)] = value
        for child in description:
            if len(child) == 0 and child.text is not None:
                found[short(child.tag)] = child.text.strip()
    return found


def png_text_chunks(record: ProvenanceRecord) -> dict[str, str]:
    """The text chunks for `diffgen.provenance.png.encode_png`: the record as JSON and the XMP packet."""
    return {PROVENANCE_KEY: record.to_json(), XMP_KEY: xmp_packet(record)}


def read_png_provenance(png_bytes: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The provenance record (parsed JSON, not validated) and the XMP packet of a PNG; None where absent."""
    try:
        _, text = decode_png(png_bytes)
    except Exception as e:  # Pillow raises several unrelated types for bytes that are not a PNG
        raise ProvenanceError(f"not a readable PNG: {type(e).__name__}: {e}") from None
    return provenance_from_text(text)


def provenance_from_text(text: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """`read_png_provenance` for text chunks already read (`diffgen.provenance.png.decode_png`'s second value)."""
    record = None
    if PROVENANCE_KEY in text:
        try:
            record = json.loads(text[PROVENANCE_KEY])
        except json.JSONDecodeError as e:
            raise ProvenanceError(f"the {PROVENANCE_KEY} chunk is not JSON: {e}") from None
        if not isinstance(record, dict):
            raise ProvenanceError(f"the {PROVENANCE_KEY} chunk holds a {type(record).__name__}, not an object")
    return record, text.get(XMP_KEY)


_weights_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of one local file (a LoRA adapter), cached while its size and modification time stay the same."""
    f = Path(path)
    stat = f.stat()
    key = (str(f.resolve()), ((f.name, stat.st_size, stat.st_mtime_ns),))
    if key not in _weights_cache:
        with f.open("rb") as handle:
            _weights_cache[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _weights_cache[key]


def weights_hash(folder: str | Path) -> str:
    """sha256 over the sorted (relative path, file sha256) of every *.safetensors file under `folder`.

    Cached per folder for as long as no file's size or modification time changes, so a worker
    hashes each multi-GB checkpoint once.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ProvenanceError(f"model folder {root} does not exist")
    files = sorted(root.rglob("*.safetensors"))
    if not files:
        raise ProvenanceError(f"model folder {root} holds no *.safetensors files")
    listing = tuple((f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(root.resolve()), listing)
    if key not in _weights_cache:
        outer = hashlib.sha256()
        for f, (relative, _, _) in zip(files, listing, strict=True):
            with f.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            outer.update(f"{relative}\x00{digest}\n".encode())
        _weights_cache[key] = outer.hexdigest()
        log.debug("hashed %d weight files under %s", len(files), root)
    return _weights_cache[key]


@functools.cache
def git_commit() -> str | None:
    """The commit of the diffgen source tree, or None when it is not a git checkout (e.g. a wheel)."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(diffgen.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return found if re.fullmatch(r"[0-9a-f]{40}", found) else None
