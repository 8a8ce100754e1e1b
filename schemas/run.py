"""run.json: the machine-readable result of a run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GroupFill(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requested: int = Field(ge=0)
    written: int = Field(ge=0)


class RunCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest_rows: int = Field(ge=0)
    invalid_rows: int = Field(
        default=0, ge=0, description="Rows skipped by policy.invalid_rows=skip (listed in OUTPUT/rejects/)."
    )
    images_expected: int = Field(
        ge=0, description="Sum of num_images over the manifest; an invalid row owes its num_images, or 1."
    )
    images_written: int = Field(ge=0, description="Slots (images asked for) with a written image.")
    rejected: int = Field(ge=0, description="Slots left without an image whose last attempt was rejected.")
    failed: int = Field(ge=0, description="Slots left without an image whose last attempt failed (or never ran).")
    attempts: int = Field(
        default=0, ge=0, description="Images generated for the expected slots, replacements included."
    )
    replaced: int = Field(default=0, ge=0, description="Slots whose written image is a replacement (attempt > 0).")
    unfilled: dict[str, int] = Field(
        default_factory=dict, description="Slots left without an image, by the reason of their last attempt."
    )
    groups: dict[str, GroupFill] | None = Field(
        default=None, description="With policy.fill_by: per value of that column, images asked for and written."
    )

    @model_validator(mode="after")
    def _reconciles(self) -> RunCounts:
        done = self.images_written + self.rejected + self.failed
        if done != self.images_expected:
            raise ValueError(
                f"counts do not reconcile: written {self.images_written} + rejected {self.rejected} "
                f"+ failed {self.failed} = {done} != expected {self.images_expected}"
            )
        return self


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    status: Literal["complete", "partial", "failed"] = Field(
        description="complete: every image written; partial: losses within policy.max_lost_fraction; "
        "failed: more lost than that."
    )
    met_policy: bool = Field(
        default=True,
        description="The run met its policy: complete, or partial within policy.max_lost_fraction without "
        "policy.require_full. Exit 0 when true; 3 for a partial run under require_full (or --strict); 4 when failed.",
    )
    manifest: str
    output: str
    job: dict[str, Any] = Field(description="The job spec as resolved (after overrides).")
    counts: RunCounts
    started_at: datetime
    finished_at: datetime
    wall_time_s: float = Field(ge=0)
    images_per_second: float = Field(ge=0)
    versions: dict[str, str]
