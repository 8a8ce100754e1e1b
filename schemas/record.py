"""The output record: one row of the index per generated (or attempted) image."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa
from pydantic import BaseModel, ConfigDict


class RecordStatus(StrEnum):
    WRITTEN = "written"
    REJECTED = "rejected"
    FAILED = "failed"


class LoraUse(BaseModel):
    """One LoRA adapter as applied to an image: its name, file, weight and the file's sha256."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    weight: float
    sha256: str


LORA_TYPE = pa.list_(
    pa.struct([("name", pa.string()), ("path", pa.string()), ("weight", pa.float64()), ("sha256", pa.string())])
)


class TextualInversionUse(BaseModel):
    """One textual-inversion embedding loaded for an image: its token, file and the file's sha256."""

    model_config = ConfigDict(extra="forbid")

    token: str
    path: str
    sha256: str


TEXTUAL_INVERSION_TYPE = pa.list_(pa.struct([("token", pa.string()), ("path", pa.string()), ("sha256", pa.string())]))


class IpAdapterUse(BaseModel):
    """One IP-Adapter as applied to an image: its weights file and sha256, image encoder folder and hash, scale."""

    model_config = ConfigDict(extra="forbid")

    weights: str
    sha256: str
    image_encoder: str
    image_encoder_sha256: str
    scale: float


IP_ADAPTER_TYPE = pa.list_(
    pa.struct([("weights", pa.string()), ("sha256", pa.string()), ("image_encoder", pa.string()),
               ("image_encoder_sha256", pa.string()), ("scale", pa.float64())])
)  # fmt: skip


class QcReason(StrEnum):
    """Why QC rejected an image (`qc_reasons[].reason`); `detail` says more where there is more to say."""

    CLIP_SCORE = "clip_score"  # detail: "12.3 < 20.0" (score < qc.min_clip_score)
    BLACK = "black"
    FLAT = "flat"
    DUPLICATE = "duplicate"  # detail: the record id of the earlier image it nearly repeats
    REFERENCE_DUPLICATE = "reference_duplicate"  # detail: the reference image it nearly repeats


@dataclass(frozen=True)
class Rejection:
    """One QC rejection reason of an image, as the index's `qc_reasons` holds it."""

    reason: QcReason
    detail: str | None = None

    def describe(self) -> str:
        """The reason as the `error` column words it, e.g. "clip_score 12.3 < 20.0", "duplicate of ab12..."."""
        if self.reason == QcReason.DUPLICATE:
            return f"duplicate of {self.detail}"
        if self.reason == QcReason.REFERENCE_DUPLICATE:
            return f"reference duplicate of {self.detail}"
        return self.reason.value if self.detail is None else f"{self.reason.value} {self.detail}"

    def to_row(self) -> dict[str, str | None]:
        return {"reason": self.reason.value, "detail": self.detail}


QC_REASON_TYPE = pa.struct([("reason", pa.string()), ("detail", pa.string())])


INDEX_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("id", pa.string()),
        ("sample_index", pa.int32()),
        ("slot_id", pa.string()),
        ("attempt", pa.int32()),
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("replaceable", pa.bool_()),
        ("image_uri", pa.string()),  # where the image was written; image_path is where it is inside the output
        ("image_path", pa.string()),
        ("sha256", pa.string()),
        ("seed", pa.int64()),
        ("prompt", pa.string()),
        ("prompt_truncated", pa.bool_()),
        ("prompt_truncation", pa.string()),
        ("negative_prompt", pa.string()),
        ("guidance_scale", pa.float64()),
        ("steps", pa.int32()),
        ("scheduler", pa.string()),
        ("scheduler_options", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("guidance_rescale", pa.float64()),
        ("cfg", pa.bool_()),
        ("strength", pa.float64()),
        ("init_image", pa.string()),
        ("init_image_sha256", pa.string()),
        ("mask_image", pa.string()),
        ("mask_image_sha256", pa.string()),
        ("control_image_uris", pa.list_(pa.string())),
        ("control_image_sha256", pa.list_(pa.string())),
        ("ip_adapter_image", pa.string()),
        ("ip_adapter_image_sha256", pa.string()),
        ("ip_adapters", IP_ADAPTER_TYPE),
        ("pipeline_class", pa.string()),
        ("model_id", pa.string()),
        ("model_weights_sha256", pa.string()),
        ("loras", LORA_TYPE),
        ("textual_inversions", TEXTUAL_INVERSION_TYPE),
        ("fingerprint", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("watermark_payload", pa.string()),
        ("watermark_ok", pa.bool_()),
        ("watermark_embeds", pa.int32()),
        ("c2pa_valid", pa.bool_()),
        ("provenance", pa.string()),
        ("clip_score", pa.float64()),
        ("clip_truncated", pa.bool_()),
        ("pixel_std", pa.float64()),
        ("phash", pa.uint64()),
        ("qc_reasons", pa.list_(QC_REASON_TYPE)),
    ]
)
INDEX_COLUMNS: tuple[str, ...] = tuple(INDEX_SCHEMA.names)
# Columns that exist only between stages and never reach the index.
TRANSIENT_COLUMNS: tuple[str, ...] = ("pixels",)
# Index columns a manifest may also carry (as per-row inputs); every other index column is reserved.
MANIFEST_INPUT_COLUMNS: frozenset[str] = frozenset(
    {"id", "prompt", "negative_prompt", "seed", "guidance_scale", "guidance_rescale", "steps", "width", "height",
     "init_image", "mask_image", "strength", "ip_adapter_image"}
)  # fmt: skip
GENERATED_COLUMNS: frozenset[str] = frozenset(INDEX_COLUMNS) - MANIFEST_INPUT_COLUMNS | frozenset(TRANSIENT_COLUMNS)
