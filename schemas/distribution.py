"""Distribution metrics beyond FID in qc/report.json: KID, CMMD and precision / recall / density /
coverage per group, from bounded seeded samples of the same features FID summarises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DistributionGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = Field(description="As in the FID table: '__all__', or a value of fid_group_by.")
    sample_count: int = Field(ge=0, description="Generated feature rows in the group's sample.")
    offered: int = Field(ge=0, description="Generated images the sample was drawn from.")
    kid: float | None = None
    kid_standard_error: float | None = None
    cmmd: float | None = Field(default=None, description="Only with a CLIP backbone (CMMD is defined on CLIP).")
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None
    note: str | None = Field(default=None, description="Why a number is missing.")


class DistributionReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str
    resize: str
    dim: int
    k: int = Field(description="Neighbours of the k-NN manifolds (precision, recall, density, coverage).")
    sample_size: int = Field(description="The most feature rows kept per group (qc.sample_size).")
    sample_seed: int
    reference: str
    reference_sample_count: int = Field(description="Reference feature rows in the sample compared against.")
    cmmd_note: str | None = None
    groups: list[DistributionGroup]
