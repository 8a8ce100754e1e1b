"""What a run does with bad rows, and how much loss still counts as a usable result."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
    replace_rejected: bool = Field(
        default=True,
        description="An image rejected by QC, or that failed after generation in a way another seed can avoid "
        "(watermark read-back, non-finite output), is replaced by a new attempt for the same slot with a seed "
        "derived from the slot's seed and the attempt number, until the slot has a written image or "
        "max_attempts is reached. Every attempt stays in the index.",
    )
    max_attempts: int = Field(
        default=4, ge=1, le=32, description="Attempts per slot (image) at most, the first included."
    )
    fill_by: str | None = Field(
        default=None,
        min_length=1,
        description="A manifest column (e.g. label): the run reports how many images each of its values asked for "
        "and got; with require_full, a value left short makes the run partial and exit 3.",
    )
    require_full: bool = Field(
        default=False,
        description="A run that ends with any slot unfilled (or, with fill_by, any group short) exits 3 instead of "
        "0, even within max_lost_fraction (the same as `--strict`).",
    )
    changed_records: Literal["refuse", "overwrite"] = Field(
        default="refuse",
        description="A re-run into an output whose committed records were made from other inputs (prompt, seed, "
        "model, ...): refuse (stop before generating, naming how many and an example) or overwrite (make them "
        "again; `--overwrite-changed`).",
    )
    corrupt_index: Literal["refuse", "quarantine"] = Field(
        default="refuse",
        description="An index shard of the output that cannot be read: refuse (name it and stop) or quarantine "
        "(move it to OUTPUT/quarantine/index/ and make its records again; `--quarantine-corrupt-index`).",
    )
    max_images: int = Field(
        default=10_000_000, ge=1, description="Cap on the images a run may ask for in all; checked in pre-flight."
    )
    max_input_bytes: int = Field(
        default=64 * 2**20,
        ge=1,
        description="Largest input image (init, mask, control) read, checked by its size before reading.",
    )
    input_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest wait for one input image to be read before the row fails."
    )
    input_roots: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        description="Allowed URI prefixes for the manifest's input images (e.g. s3://bucket/inputs/); any other "
        "location is refused in pre-flight. Null allows any location the workers can read.",
    )
