"""Checking one diffgen PNG: do its provenance record, XMP packet, watermark and C2PA manifest agree?

Each check is data (`Check`), never an exception, so a damaged file yields a full report
rather than the first error. Only a configuration error (unparseable trust anchors) raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from diffgen.provenance import watermark
from diffgen.provenance.c2pa import C2paResult, soft_binding_payload, verify_png
from diffgen.provenance.png import decode_png
from diffgen.provenance.record import (
    PROVENANCE_KEY,
    TRAINED_ALGORITHMIC_MEDIA,
    ProvenanceError,
    ProvenanceRecord,
    parse_xmp,
    provenance_from_text,
)
from diffgen.schemas.errors import format_validation_error

CheckStatus = Literal["pass", "fail", "warn", "skip"]


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
            "c2pa": c2pa,
        }


def verify_image(
    png_bytes: bytes,
    trust_anchors_pem: bytes | None = None,
    *,
    require_c2pa: bool = False,
    min_bit_accuracy: float = 1.0,
) -> VerifyReport:
    """Read everything a diffgen PNG carries and check that it agrees.

    A lossless PNG as written must yield its watermark exactly, hence `min_bit_accuracy` 1.0.
    Without `trust_anchors_pem`, a manifest whose signer is not on c2pa-rs's built-in trust
    list only warns; with anchors, an untrusted signer fails.
    """
    report = VerifyReport()
    checks = report.checks
    pixels: np.ndarray | None = None
    record: ProvenanceRecord | None = None
    xmp: str | None = None
    try:
        pixels, text = decode_png(png_bytes)
    except Exception as e:  # Pillow raises several unrelated types for damaged files
        checks.append(Check("png", "fail", f"not a readable PNG: {type(e).__name__}: {e}"))
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
        _check_watermark(pixels, record, min_bit_accuracy, report)
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


def _check_watermark(
    pixels: np.ndarray, record: ProvenanceRecord | None, min_bit_accuracy: float, report: VerifyReport
) -> None:
    checks = report.checks
    expected = record.watermark_payload if record is not None else None
    try:
        found = watermark.extract(pixels)
    except watermark.WatermarkError as e:
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
    derived = watermark.payload_hex(watermark.payload_for(record.run_id, record.record_id))
    if expected != derived:
        checks.append(
            Check("watermark", "fail", f"record payload {expected} is not the one its run and record id give")
        )
        return
    accuracy = watermark.bit_accuracy(found, bytes.fromhex(expected))
    report.watermark_bit_accuracy = accuracy
    matching = round(accuracy * watermark.PAYLOAD_BITS)
    status = "pass" if accuracy >= min_bit_accuracy else "fail"
    checks.append(Check("watermark", status, f"{matching}/{watermark.PAYLOAD_BITS} bits match payload {expected}"))


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
