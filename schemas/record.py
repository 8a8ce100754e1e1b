"""The output record: one row of the index per generated (or attempted) image."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


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


class OutputRecord(BaseModel):
    """One image. Pass-through manifest columns are added beside these in the index."""

    model_config = ConfigDict(extra="forbid")

    record_id: str = Field(description="Stable hash of (id, sample_index); names the image.")
    id: str = Field(description="The manifest row's id, unchanged.")
    sample_index: int = Field(ge=0)
    run_id: str
    status: RecordStatus
    error: str | None = None
    image_uri: str | None = Field(description="Set only when status is 'written'.")
    sha256: str | None = Field(description="Of the PNG bytes at image_uri.")
    seed: int
    prompt: str
    prompt_truncated: bool | None = Field(
        default=None,
        description="The prompt exceeded a text encoder's token limit and was cut there (diffusers only logs it). "
        "Not the QC stage's clip_truncated, which is about the CLIP scorer.",
    )
    prompt_truncation: str | None = Field(
        default=None, description="Where it was cut, per tokenizer: e.g. 'tokenizer: 112 > 77 tokens'."
    )
    negative_prompt: str
    guidance_scale: float
    steps: int
    scheduler: str
    width: int
    height: int
    guidance_rescale: float
    cfg: bool | None = Field(description="Whether the unconditional (classifier-free guidance) pass ran.")
    strength: float | None = Field(description="img2img/inpaint strength; null for text-to-image.")
    init_image: str | None = None
    init_image_sha256: str | None = None
    mask_image: str | None = None
    mask_image_sha256: str | None = None
    control_image_uris: list[str | None] | None = Field(
        default=None, description="One per ControlNet in job order; null where an optional one had no image."
    )
    control_image_sha256: list[str | None] | None = None
    pipeline_class: str | None = Field(default=None, description="The diffusers pipeline class that sampled it.")
    model_id: str
    model_weights_sha256: str | None = Field(default=None, description="The base model's weights hash.")
    loras: list[LoraUse] | None = Field(default=None, description="The LoRA adapters applied, in job order.")
    fingerprint: str | None = Field(
        default=None,
        description="sha256 of everything that determines the image (diffgen.dataset.fingerprint); resume skips a record "
        "only when it matches.",
    )
    created_at: datetime
    watermark_payload: str | None = Field(
        default=None, description="16 hex characters embedded invisibly; looks an image found in the wild up."
    )
    watermark_ok: bool | None = Field(default=None, description="The payload decoded back right after embedding.")
    c2pa_valid: bool | None = Field(default=None, description="C2PA manifest verified after signing; null if off.")
    provenance: str | None = Field(default=None, description="The provenance record (JSON) written into the PNG.")
    clip_score: float | None = Field(default=None, description="100*max(cos, 0) of prompt and image; null without QC.")
    pixel_std: float | None = None
    phash: int | None = Field(default=None, description="64-bit perceptual hash; null without QC.")
    qc_reasons: list[str] | None = Field(default=None, description="Why QC rejected it; empty when it passed.")


INDEX_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("id", pa.string()),
        ("sample_index", pa.int32()),
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("image_uri", pa.string()),
        ("sha256", pa.string()),
        ("seed", pa.int64()),
        ("prompt", pa.string()),
        ("prompt_truncated", pa.bool_()),
        ("prompt_truncation", pa.string()),
        ("negative_prompt", pa.string()),
        ("guidance_scale", pa.float64()),
        ("steps", pa.int32()),
        ("scheduler", pa.string()),
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
        ("pipeline_class", pa.string()),
        ("model_id", pa.string()),
        ("model_weights_sha256", pa.string()),
        ("loras", LORA_TYPE),
        ("fingerprint", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("watermark_payload", pa.string()),
        ("watermark_ok", pa.bool_()),
        ("c2pa_valid", pa.bool_()),
        ("provenance", pa.string()),
        ("clip_score", pa.float64()),
        ("pixel_std", pa.float64()),
        ("phash", pa.uint64()),
        ("qc_reasons", pa.list_(pa.string())),
    ]
)
INDEX_COLUMNS: tuple[str, ...] = tuple(INDEX_SCHEMA.names)
# Columns that exist only between stages and never reach the index.
TRANSIENT_COLUMNS: tuple[str, ...] = ("pixels",)
# Index columns a manifest may also carry (as per-row inputs); every other index column is reserved.
MANIFEST_INPUT_COLUMNS: frozenset[str] = frozenset(
    {"id", "prompt", "negative_prompt", "seed", "guidance_scale", "guidance_rescale", "steps", "width", "height",
     "init_image", "mask_image", "strength"}
)  # fmt: skip
GENERATED_COLUMNS: frozenset[str] = frozenset(INDEX_COLUMNS) - MANIFEST_INPUT_COLUMNS | frozenset(TRANSIENT_COLUMNS)
