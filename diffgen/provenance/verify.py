"""Checking one diffgen image: do its provenance record, XMP packet, watermark and C2PA manifest agree,
and which index row does its watermark lead to?

Each check is data (`Check`), never an exception, so a damaged file yields a full report
rather than the first error. Only a configuration error (unparseable trust anchors) raises.
A version-2 record's payload commits to its fields (`record.watermark_payload_for`), so an edited
prompt, seed, model or run id disagrees with the pixels even without C2PA; with an index lookup,
the row the pixels lead to names the fields that differ. Images of scheme 1 (provenance_version 1)
are read with `watermark_v1`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import io
import json
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import ValidationError

from diffgen.provenance import watermark, watermark_v1
from diffgen.provenance.c2pa import C2paResult, soft_binding_payload, verify_png
from diffgen.provenance.png import decode_png
from diffgen.provenance.record import (
    PROVENANCE_KEY,
    TRAINED_ALGORITHMIC_MEDIA,
    ProvenanceError,
    ProvenanceRecord,
    parse_xmp,
    payload_disagreement,
    provenance_from_text,
    watermark_payload_for,
)
from diffgen.schemas.errors import format_validation_error

CheckStatus = Literal["pass", "fail", "warn", "skip"]
# payload (16 hex characters) -> the index rows that carry it (`diffgen.dataset.lookup.IndexLookup.rows`)
RowLookup = Callable[[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str


@dataclass
class VerifyReport:
    """Every check run on one image, plus what was read, for printing or JSON."""

    checks: list[Check] = field(default_factory=list)
    record: dict[str, Any] | None = None
    xmp_fields: dict[str, str] | None = None
    watermark_payload: str | None = None
    watermark_bit_accuracy: float | None = None
    watermark_confidence: float | None = None
    index_rows: list[dict[str, Any]] | None = None
    c2pa: C2paResult | None = None

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings and skipped checks do not fail an image)."""
        return bool(self.checks) and all(c.status != "fail" for c in self.checks)

    def summary_lines(self) -> list[str]:
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"{c.status.upper():<4}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        failed = sum(c.status == "fail" for c in self.checks)
        lines.append(
            "OK: provenance, XMP, watermark and C2PA agree" if self.ok else f"FAILED: {failed} check(s) failed"
        )
        return lines

    def to_dict(self) -> dict[str, Any]:
        c2pa = None
        if self.c2pa is not None:
            c2pa = {
                "present": self.c2pa.present,
                "state": self.c2pa.state,
                "valid": self.c2pa.valid,
                "trusted": self.c2pa.trusted,
                "failures": list(self.c2pa.failures),
                "signer": self.c2pa.signer,
            }
        return {
            "ok": self.ok,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks],
            "record": self.record,
            "xmp": self.xmp_fields,
            "watermark_payload": self.watermark_payload,
            "watermark_bit_accuracy": self.watermark_bit_accuracy,
            "watermark_confidence": self.watermark_confidence,
            "index_rows": self.index_rows,
            "c2pa": c2pa,
        }


def verify_image(
    png_bytes: bytes,
    trust_anchors_pem: bytes | None = None,
    *,
    require_c2pa: bool = False,
    min_bit_accuracy: float = 1.0,
    lookup: RowLookup | None = None,
) -> VerifyReport:
    """Read everything a diffgen image carries and check that it agrees.

    Any image Pillow reads is accepted; only a PNG can carry the text chunks. A scheme-1 mark must
    match in `min_bit_accuracy` of its bits (1.0: a lossless PNG as written); a scheme-2 mark is exact or
    not found. Without `trust_anchors_pem`, a manifest whose signer is not on c2pa-rs's built-in trust
    list only warns; with anchors, an untrusted signer fails. With `lookup`, the payload read from the
    pixels is looked up in an index: an image stripped of its metadata is identified by its row, and a
    record that differs from its row fails naming the fields.
    """
    report = VerifyReport()
    checks = report.checks
    pixels: np.ndarray | None = None
    record: ProvenanceRecord | None = None
    xmp: str | None = None
    try:
        pixels, text = _read_image(png_bytes)
    except Exception as e:  # Pillow raises several unrelated types for damaged files
        checks.append(Check("png", "fail", f"not a readable PNG or image: {type(e).__name__}: {e}"))
        text = {}
    if pixels is not None:
        try:
            raw, xmp = provenance_from_text(text)
        except ProvenanceError as e:
            raw = None
            checks.append(Check("provenance", "fail", str(e)))
        else:
            report.record = raw
            record = _check_record(raw, pixels, checks)
        report.xmp_fields = _check_xmp(xmp, record, checks)
        if record is not None and record.provenance_version == 1:
            _check_watermark_v1(pixels, record, min_bit_accuracy, report)
        else:
            _check_watermark(pixels, record, report)
        if lookup is not None:
            _check_index(lookup, record, raw is None and xmp is None, report)
    _check_c2pa(verify_png(png_bytes, trust_anchors_pem), record, trust_anchors_pem is not None, require_c2pa, report)
    return report


def _check_record(raw: dict[str, Any] | None, pixels: np.ndarray, checks: list[Check]) -> ProvenanceRecord | None:
    if raw is None:
        checks.append(Check("provenance", "fail", f"no {PROVENANCE_KEY} text chunk"))
        return None
    try:
        record = ProvenanceRecord.model_validate(raw)
    except ValidationError as e:
        checks.append(Check("provenance", "fail", format_validation_error(PROVENANCE_KEY, e).replace("\n", ";")))
        return None
    height, width = pixels.shape[:2]
    if (record.width, record.height) != (width, height):
        checks.append(
            Check("provenance", "fail", f"record says {record.width}x{record.height}, the image is {width}x{height}")
        )
    else:
        where = f"run {record.run_id}, sample {record.sample_index}"
        checks.append(Check("provenance", "pass", f"record {record.record_id} ({where}), model {record.model_id}"))
    return record


def _check_xmp(xmp: str | None, record: ProvenanceRecord | None, checks: list[Check]) -> dict[str, str] | None:
    if xmp is None:
        checks.append(Check("xmp", "fail", "no XMP packet (XML:com.adobe.xmp)"))
        return None
    try:
        fields = parse_xmp(xmp)
    except ProvenanceError as e:
        checks.append(Check("xmp", "fail", str(e)))
        return None
    problems = []
    source = fields.get("Iptc4xmpExt:DigitalSourceType")
    if source != TRAINED_ALGORITHMIC_MEDIA:
        problems.append(f"DigitalSourceType is {source!r}, not trainedAlgorithmicMedia")
    if record is not None:
        if fields.get("diffgen:RecordId") != record.record_id:
            problems.append(f"record id {fields.get('diffgen:RecordId')!r} differs from the record's")
        if fields.get("diffgen:WatermarkPayload") != record.watermark_payload:
            problems.append(f"watermark payload {fields.get('diffgen:WatermarkPayload')!r} differs from the record's")
    if problems:
        checks.append(Check("xmp", "fail", "; ".join(problems)))
    else:
        checks.append(
            Check("xmp", "pass", "marked trainedAlgorithmicMedia" + ("; agrees with the record" if record else ""))
        )
    return fields


def _check_watermark(pixels: np.ndarray, record: ProvenanceRecord | None, report: VerifyReport) -> None:
    checks = report.checks
    expected = record.watermark_payload if record is not None else None
    try:
        found = watermark.decode(pixels)
    except watermark.WatermarkError as e:
        checks.append(Check("watermark", "fail" if expected is not None else "skip", str(e)))
        return
    if found is None and record is None:
        legacy = _legacy_payload(pixels)  # maybe scheme 1; only an index can tell
        report.watermark_payload = legacy
        checks.append(Check("watermark", "skip", "no scheme-2 watermark found" + (
            f"; scheme-1 bits read {legacy}, unchecked" if legacy else "")))  # fmt: skip
        return
    if found is not None:
        report.watermark_payload, report.watermark_confidence = found.payload.hex(), found.confidence
    if record is None:
        checks.append(Check("watermark", "skip", f"payload {found.payload.hex()} read exactly ({_how(found)}); "
                                                 "no valid record to compare with"))  # fmt: skip
        return
    if expected is None:
        status: CheckStatus = "warn" if found is None else "fail"
        what = "" if found is None else f", yet the pixels carry payload {found.payload.hex()}"
        checks.append(Check("watermark", status, f"the record says the image was written without a watermark{what}"))
        return
    if edited := payload_disagreement(record, bytes.fromhex(expected)):
        checks.append(Check("watermark", "fail", f"record payload {expected} is not the one its fields give "
                                                 f"(edited: {' and '.join(edited)})"))  # fmt: skip
        return
    if found is None:
        checks.append(Check("watermark", "fail", f"no watermark found; the record expects payload {expected}"))
        return
    report.watermark_bit_accuracy = watermark.bit_accuracy(found.payload, bytes.fromhex(expected))
    if found.payload.hex() != expected:
        edited = " and ".join(payload_disagreement(record, found.payload))
        checks.append(Check("watermark", "fail", f"the pixels carry payload {found.payload.hex()}, the record's "
                                                 f"fields give {expected} (edited: {edited})"))  # fmt: skip
        return
    checks.append(Check("watermark", "pass", f"payload {expected} read exactly ({_how(found)}); it commits to the "
                                             "record's ids, prompt, seed and model"))  # fmt: skip


def _how(found: watermark.Detection) -> str:
    where = "" if found.scale == 1.0 else f", image shows {found.scale:.1%} of the original's side"
    return f"{found.corrected}/{found.correctable} correctable bits corrected, layout {found.layout}{where}"


def _legacy_payload(pixels: np.ndarray) -> str | None:
    try:
        return watermark_v1.extract(pixels).hex()
    except watermark_v1.WatermarkError:
        return None


def _check_index(lookup: RowLookup, record: ProvenanceRecord | None, stripped: bool, report: VerifyReport) -> None:
    """The index rows the pixels' payload leads to; a record that differs from its row names the fields."""
    checks = report.checks
    if report.watermark_payload is None:
        checks.append(Check("index", "fail", "no watermark payload to look up"))
        return
    rows = lookup(report.watermark_payload)
    scheme = "scheme-2 payload" if report.watermark_confidence is not None else "scheme-1 bits"
    if not rows:
        checks.append(Check("index", "fail", f"{scheme} {report.watermark_payload} match no row of the indexes"))
        return
    report.index_rows = rows
    if stripped:  # no metadata at all: the watermark and the index row are what identify the image
        for i, c in enumerate(checks):
            if c.name in ("provenance", "xmp"):
                checks[i] = Check(c.name, "skip", c.detail)
            elif c.name == "watermark" and report.watermark_confidence is None:  # a scheme-1 row is its own check
                checks[i] = Check(c.name, "pass", f"scheme-1 payload {report.watermark_payload} matches an index row")
    row = rows[0]
    where = f"record {row.get('record_id')} (manifest row {row.get('id')}, run {row.get('run_id')}) in {row['output']}"
    if record is None:
        checks.append(Check("index", "pass", f"{where}; {len(rows)} row(s)"))
        return
    indexed, mine = _json_or_none(row.get("provenance")), record.to_dict()
    differing = sorted(k for k in indexed or {} if k != "watermark_payload" and indexed.get(k) != mine.get(k))
    if differing:
        checks.append(Check("index", "fail", f"{where}: the image's record differs in {', '.join(differing)}"))
    else:
        checks.append(Check("index", "pass", f"{where}; the record agrees with it"))


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _read_image(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """Pixels and PNG text chunks; other formats (JPEG, WebP, ...) yield pixels and no text."""
    try:
        return decode_png(data)
    except ValueError as e:
        if not str(e).startswith("not a PNG"):
            raise
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")), {}


def _check_watermark_v1(
    pixels: np.ndarray, record: ProvenanceRecord | None, min_bit_accuracy: float, report: VerifyReport
) -> None:
    checks = report.checks
    expected = record.watermark_payload if record is not None else None
    try:
        found = watermark_v1.extract(pixels)
    except watermark_v1.WatermarkError as e:
        status: CheckStatus = "fail" if expected is not None else "skip"
        checks.append(Check("watermark", status, str(e)))
        return
    report.watermark_payload = found.hex()
    if record is None:
        checks.append(Check("watermark", "skip", f"read payload {found.hex()}; no valid record to compare with"))
        return
    if expected is None:
        checks.append(Check("watermark", "warn", "the record says the image was written without a watermark"))
        return
    derived = watermark_v1.payload_hex(watermark_v1.payload_for(record.run_id, record.record_id))
    if expected != derived:
        checks.append(
            Check("watermark", "fail", f"record payload {expected} is not the one its run and record id give")
        )
        return
    accuracy = watermark_v1.bit_accuracy(found, bytes.fromhex(expected))
    report.watermark_bit_accuracy = accuracy
    matching = round(accuracy * watermark_v1.PAYLOAD_BITS)
    status = "pass" if accuracy >= min_bit_accuracy else "fail"
    checks.append(Check("watermark", status, f"{matching}/{watermark_v1.PAYLOAD_BITS} bits match payload {expected}"))


def _check_c2pa(
    result: C2paResult, record: ProvenanceRecord | None, anchored: bool, required: bool, report: VerifyReport
) -> None:
    report.c2pa = result
    checks = report.checks
    if not result.present:
        checks.append(Check("c2pa", "fail" if required else "skip", "no C2PA manifest"))
        return
    untrusted_only = all(f.startswith("signingCredential.untrusted") for f in result.failures)
    if not result.valid:
        checks.append(Check("c2pa", "fail", f"{result.state}: " + "; ".join(result.failures)))
    elif result.digital_source_type != TRAINED_ALGORITHMIC_MEDIA:
        checks.append(Check("c2pa", "fail", f"c2pa.created digitalSourceType is {result.digital_source_type!r}"))
    elif result.trusted:
        checks.append(Check("c2pa", "pass", f"Trusted; signed by {result.signer}"))
    elif anchored or not untrusted_only:
        checks.append(Check("c2pa", "fail", "intact but not trusted: " + "; ".join(result.failures)))
    else:
        checks.append(Check("c2pa", "warn", f"intact; signer {result.signer} not checked (no trust anchors given)"))
    if record is None:
        return
    expected, signed = record.to_dict(), result.provenance
    if signed == expected:
        checks.append(Check("c2pa-record", "pass", "manifest assertion equals the PNG's record"))
    else:
        differing = sorted(
            k for k in expected.keys() | (signed or {}).keys() if (signed or {}).get(k) != expected.get(k)
        )
        what = "missing" if signed is None else f"differs in {', '.join(differing)}"
        checks.append(Check("c2pa-record", "fail", f"manifest provenance assertion {what}"))
    bound = soft_binding_payload(result.soft_binding)
    if record.watermark_payload is None and bound is None:
        checks.append(Check("c2pa-watermark", "skip", "no watermark and no soft binding"))
    elif bound is not None and bound.hex() == record.watermark_payload:
        checks.append(Check("c2pa-watermark", "pass", f"soft binding names payload {bound.hex()}"))
    else:
        named = bound.hex() if bound is not None else "no diffgen soft binding"
        checks.append(Check("c2pa-watermark", "fail", f"manifest has {named}, record has {record.watermark_payload}"))
