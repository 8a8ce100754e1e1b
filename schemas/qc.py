"""The QC spec: which per-image checks reject a row, and how FID statistics are grouped."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffgen.schemas.utility import UtilitySpec

# The keys of diffgen.metrics.backbones.BACKBONES; schemas import nothing of ours, so a test keeps them in step.
FidBackboneName = Literal["pixels-16", "clip", "inception-v3-pt"]
FID_BACKBONE_NAMES: tuple[str, ...] = FidBackboneName.__args__  # type: ignore[attr-defined]


class QcSpec(BaseModel):
    """Per-image quality checks run after sampling; a row failing any threshold is `rejected`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = False
    clip_model: str | None = Field(
        default=None, min_length=1, description="Local CLIP folder; needed for clip_score and the 'clip' backbone."
    )
    min_clip_score: float | None = Field(
        default=None, ge=0.0, le=100.0, description="Reject images scoring below this (100 * cosine); null is off."
    )
    black_level: float = Field(
        default=8.0, ge=0.0, le=255.0, description="Reject images whose every channel is at most this level."
    )
    flat_std: float = Field(default=2.0, ge=0.0, description="Reject images whose grayscale std is below this.")
    phash_max_distance: int = Field(
        default=4, ge=0, le=64, description="Reject later images within this many pHash bits of an earlier one."
    )
    fid_backbone: FidBackboneName = "pixels-16"
    fid_weights: str | None = Field(
        default=None, min_length=1, description="Local FID Inception weights file; only for 'inception-v3-pt'."
    )
    fid_group_by: str | None = Field(
        default=None, min_length=1, description="Column whose value splits FID statistics into groups."
    )
    reference: str | None = Field(
        default=None,
        min_length=1,
        description="Reference image set (a folder of PNG/JPEG or Parquet with an image column, any URI): "
        "FID is measured against it and images within phash_max_distance of one of its images are rejected.",
    )
    reference_image_column: str = Field(
        default="image", min_length=1, description="The encoded-image column when the reference is Parquet."
    )
    reference_stats: str | None = Field(
        default=None,
        min_length=1,
        description="A statistics file (diffgen-feature-stats .npz) to measure FID against instead of a reference "
        "set; it must have been computed with this fid_backbone.",
    )
    report_examples: int = Field(
        default=8, ge=0, le=64, description="Best- and worst-scoring images shown in qc/report.html, each."
    )
    sample_size: int = Field(
        default=10_000, ge=0, le=1_000_000,
        description="Feature vectors kept per FID group (a seeded sample) for KID, CMMD and precision/recall/"
        "density/coverage; 0 turns them off.",
    )  # fmt: skip
    sample_seed: int = Field(default=0, ge=0, description="Seeds which images those samples keep.")
    utility: UtilitySpec | None = Field(
        default=None, description="Score the written images' utility against a labelled real set after the run."
    )

    @model_validator(mode="after")
    def _models_are_given(self) -> QcSpec:
        problems = []
        if self.min_clip_score is not None and self.clip_model is None:
            problems.append("min_clip_score needs clip_model (a local CLIP folder)")
        if self.fid_backbone == "clip" and self.clip_model is None:
            problems.append("fid_backbone 'clip' needs clip_model (a local CLIP folder)")
        if self.fid_backbone == "inception-v3-pt" and self.fid_weights is None:
            problems.append("fid_backbone 'inception-v3-pt' needs fid_weights (the FID Inception weights file)")
        if self.fid_backbone != "inception-v3-pt" and self.fid_weights is not None:
            problems.append(f"fid_weights is only read by fid_backbone 'inception-v3-pt', not '{self.fid_backbone}'")
        if self.reference is not None and self.reference_stats is not None:
            problems.append("give reference or reference_stats, not both")
        if self.utility is not None and self.clip_model is None:
            problems.append("utility needs clip_model (its probes run on the CLIP image embeddings)")
        if problems:
            raise ValueError("; ".join(problems))
        return self
