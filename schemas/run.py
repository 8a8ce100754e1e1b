"""run.json: the machine-readable result of a run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RunCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest_rows: int = Field(ge=0)
    invalid_rows: int = Field(
        default=0, ge=0, description="Rows skipped by policy.invalid_rows=skip (listed in OUTPUT/rejects/)."
    )
    images_expected: int = Field(
        ge=0, description="Sum of num_images over the manifest; an invalid row owes its num_images, or 1."
    )
    images_written: int = Field(ge=0)
    rejected: int = Field(ge=0)
    failed: int = Field(ge=0)

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
    manifest: str
    output: str
    job: dict[str, Any] = Field(description="The job spec as resolved (after overrides).")
    counts: RunCounts
    started_at: datetime
    finished_at: datetime
    wall_time_s: float = Field(ge=0)
    images_per_second: float = Field(ge=0)
    versions: dict[str, str]
