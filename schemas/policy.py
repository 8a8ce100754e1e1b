"""What a run does with bad rows, and how much loss still counts as a usable result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    invalid_rows: Literal["fail", "skip"] = Field(
        default="fail",
        description="fail: stop before any model loads, listing the first offending rows; "
        "skip: write them to OUTPUT/rejects/ with the reason and generate the rest.",
    )
    max_images_per_row: int = Field(default=1000, ge=1, le=10_000, description="Cap on a row's num_images.")
    max_lost_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Share of expected images that may be rejected or failed while the run still counts "
        "as 'partial' (exit 3) rather than 'failed' (exit 4).",
    )
    row_retries: int = Field(default=2, ge=0, le=10, description="Retries of a failed image before it is 'failed'.")
