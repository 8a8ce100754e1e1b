"""qc/report.json: what the quality stage measured over one output, for people and for tools.

Every FID number carries the backbone, resize mode and dimension it was computed in; two
numbers are comparable only when those agree (and, for small sets, the counts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from diffgen.schemas.distribution import DistributionReport


class Histogram(BaseModel):
    model_config = ConfigDict(extra="forbid")

    edges: list[float] = Field(description="Bin edges, one more than counts.")
    counts: list[int]


class ScoreSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=0)
    mean: float | None = None
    min: float | None = None
    p05: float | None = None
    p50: float | None = None
    p95: float | None = None
    max: float | None = None
    histogram: Histogram | None = None


class FidGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = Field(description="The group's value of fid_group_by, '__all__' for every image, '__null__' for none.")
    fid: float | None = Field(description="Null when it cannot be computed; `note` says why.")
    count: int = Field(ge=0, description="Generated images in the group's statistics.")
    reference_count: int = Field(ge=0)
    rank_deficient: bool = Field(
        default=False,
        description="Fewer images than feature dimensions on a side: the value depends on the set size.",
    )
    note: str | None = None


class FidReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str
    resize: str
    dim: int
    reference: str = Field(description="The reference image set or statistics file the distances are measured to.")
    reference_count: int
    group_by: str | None
    covered_images: int = Field(description="Images scored into the statistics; compare with written_images.")
    written_images: int
    groups: list[FidGroup]


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")

    record_id: str
    prompt: str | None
    score: float | None
    image_uri: str
    group: str | None = None


class FillGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slots: int = Field(ge=0, description="Images asked for (slots) with at least one attempt in the index.")
    filled: int = Field(ge=0, description="Slots with a written image.")
    attempts: int = Field(ge=0, description="Images generated for them, replacements included.")
    rate: float = Field(ge=0, le=1, description="filled / slots.")


class ShortRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The manifest row's id.")
    slots: int = Field(ge=0)
    filled: int = Field(ge=0)
    group: str | None = None


class FillReport(BaseModel):
    """How the slots were filled: what replacement cost, and which rows and groups ended short."""

    model_config = ConfigDict(extra="forbid")

    overall: FillGroup
    first_attempt_accepted: int = Field(ge=0, description="Slots whose first attempt was written.")
    first_attempt_acceptance: float = Field(ge=0, le=1, description="first_attempt_accepted / slots.")
    attempts_per_slot: float = Field(ge=0, description="attempts / slots.")
    rows: int = Field(ge=0, description="Manifest rows with a slot in the index.")
    rows_full: int = Field(ge=0, description="Rows every slot of which has a written image.")
    short_rows: list[ShortRow] = Field(description="Rows left short, fewest filled first (at most 50).")
    group_by: str | None = Field(description="The column groups are values of (policy.fill_by, else qc.fid_group_by).")
    groups: dict[str, FillGroup] = Field(default_factory=dict)


class QcReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: str
    run_id: str | None
    mode: Literal["run", "rescore"] = Field(
        description="run: written by the run itself; rescore: `diffgen qc` over an existing output, which "
        "never changes the index (images failing today's thresholds are counted in would_reject)."
    )
    created_at: datetime
    thresholds: dict[str, Any] = Field(description="The QC spec the scores were judged by.")
    counts: dict[str, int] = Field(description="Index rows by status.")
    reasons: dict[str, int] = Field(description="Rejections by reason (one image may have several).")
    would_reject: int | None = Field(default=None, description="rescore only: written images failing today's checks.")
    scores: dict[str, ScoreSummary] = Field(description="clip_score and pixel_std over every scored image.")
    fid: FidReport | None
    fid_note: str | None = Field(default=None, description="Why there is no FID, when there is none.")
    fill: FillReport | None = Field(default=None, description="Slots filled, attempts, per row and per group.")
    distribution: DistributionReport | None = Field(
        default=None, description="KID, CMMD, precision/recall/density/coverage per group, beside FID."
    )
    ranked_by: str | None = Field(description="The score that orders best and worst.")
    best: list[Example]
    worst: list[Example]
    versions: dict[str, str]
