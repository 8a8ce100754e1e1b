"""The utility score's settings (`qc.utility`) and its result, qc/utility.json: how well a classifier
trained on the synthetic images does on real ones (train on synthetic, test on real), beside the same
classifier trained on real images, and what the synthetic images add to a few real ones.

Every number comes with a bootstrap 95 % interval over the real test images (`Interval`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class UtilitySpec(BaseModel):
    """A labelled real set and how to split it; the probes run on the QC CLIP's image embeddings."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    real: str = Field(
        min_length=1,
        description="Labelled real images, any URI: a folder of class subfolders (the subfolder is the label), "
        "or Parquet with an encoded-image column and the label column.",
    )
    label_column: str = Field(
        default="label", min_length=1, description="The label column of the manifest (index) and of a real Parquet."
    )
    image_column: str = Field(default="image", min_length=1, description="The real Parquet's encoded-image column.")
    test_fraction: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="Share of each class's real images held out as the test set."
    )
    few_shot: int = Field(
        default=10, ge=1, le=10_000, description="Real training images per class for the augmentation baseline."
    )
    max_per_class: int = Field(
        default=10_000, ge=2, le=1_000_000, description="Synthetic training images per class (a seeded sample)."
    )
    resamples: int = Field(default=1000, ge=100, le=100_000, description="Bootstrap resamples for the intervals.")
    seed: int = Field(default=0, ge=0, description="Seeds the real split, the synthetic sample and the bootstrap.")
    probe_c: float = Field(
        default=1.0, gt=0.0, description="Inverse L2 strength of the logistic-regression probe (scikit-learn's C)."
    )


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float | None = Field(description="The estimate on the whole test set; null when undefined.")
    low: float | None = Field(description="2.5th percentile of the bootstrap resamples.")
    high: float | None = Field(description="97.5th percentile of the bootstrap resamples.")


class ProbeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="synthetic | real | few_shot | few_shot_plus_synthetic")
    trained_on: str = Field(description="What the probe was trained on, in words.")
    train_images: dict[str, int] = Field(description="Training images per class.")
    accuracy: Interval
    macro_f1: Interval
    class_accuracy: dict[str, Interval] = Field(description="Per class: share of its real test images named right.")
    class_f1: dict[str, Interval]
    confusion: list[list[int]] = Field(description="Rows: true class, columns: predicted, in the order of `classes`.")


class UtilityReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: str
    created_at: datetime
    real: str = Field(description="The labelled real set.")
    label_column: str
    backbone: str = Field(description="The image embeddings the probes were trained on (CLIP weights named).")
    dim: int
    classes: list[str] = Field(description="Labels in both sets: the ones scored.")
    synthetic_only: list[str] = Field(description="Labels of written images that the real set lacks: not scored.")
    real_only: list[str] = Field(description="Labels of the real set that no written image has: not scored.")
    synthetic_images: dict[str, int] = Field(description="Synthetic training images per class (a seeded sample).")
    synthetic_written: dict[str, int] = Field(description="Written images per class that the sample was drawn from.")
    real_images: dict[str, int] = Field(description="Real images per class, before the split.")
    test_images: dict[str, int] = Field(description="Real test images per class (held out from every probe).")
    probes: list[ProbeResult]
    ratio: Interval = Field(description="Synthetic-trained accuracy / real-trained accuracy on the real test set.")
    class_ratio: dict[str, Interval]
    few_shot: int = Field(description="Real images per class in the augmentation baseline.")
    augmentation_gain: Interval = Field(
        description="Accuracy of few real + all synthetic minus accuracy of the few real alone."
    )
    class_gain: dict[str, Interval]
    resamples: int
    level: float
    seed: int
    warnings: list[str] = Field(description="What makes the numbers less meaningful, each naming the class or file.")
    versions: dict[str, str]
