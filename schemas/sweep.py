"""sweep.json: a grid of job settings, each point run into its own output and scored, and the best
point per metric (`diffgen sweep`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SweepPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The point's folder under the sweep's output, from its settings.")
    settings: dict[str, Any] = Field(description="The swept job fields and their values at this point.")
    output: str
    status: str | None = Field(description="run.json's status (complete, partial, failed).")
    resumed: bool = Field(description="The point's run.json was already complete for these settings: not run again.")
    metrics: dict[str, float | None] = Field(description="Each metric of `Metric` at this point (null if missing).")


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    better: Literal["higher", "lower"]
    best: str | None = Field(description="The point with the best value; null when no point has one.")
    note: str | None = Field(default=None, description="What the number is, with its backbone where it has one.")


class SweepReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: str = Field(description="The job file the points were made from.")
    output: str
    created_at: datetime
    grid: dict[str, list[Any]] = Field(description="Each swept field and its values, in the order given.")
    points: list[SweepPoint]
    metrics: list[Metric]
    versions: dict[str, str]
