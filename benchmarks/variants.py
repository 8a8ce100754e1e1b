"""The variant registry: every configuration a benchmark can time, by name."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    BARE = "bare"  # a plain diffusers loop in this process (or several, side by side)
    PIPELINE = "pipeline"  # diffgen.jobs.api.run on its own Ray


class Output(StrEnum):
    LOCAL = "local"
    S3 = "s3"  # moto's S3 server on 127.0.0.1


@dataclass(frozen=True)
class Variant:
    name: str
    kind: Kind
    description: str
    actors: int = 1  # bare: processes side by side, each over its share of the images
    threads: int | None = None  # None: diffgen's default (diffgen.stages.generate.default_cpu_threads)
    qc: bool = True
    watermark: bool = True
    output: Output = Output.LOCAL
    helper_niceness: bool = True  # False: compute.helper_niceness=null, QC and writers at Ray's worker niceness


# In the order a session runs them (each round of --repeats runs them all in this order).
CPU_VARIANTS = (
    Variant("bare", Kind.BARE, "plain diffusers loop, 2 threads", threads=2),
    Variant("bare-1t", Kind.BARE, "plain diffusers loop, 1 thread", threads=1),
    Variant("bare-2x1", Kind.BARE, "2 plain diffusers loops side by side (2 processes x 1 thread), half the images "
            "each", actors=2, threads=1),
    Variant("pipeline", Kind.PIPELINE, "diffgen.jobs.api.run, 1 actor x diffgen's default threads, QC + watermark + "
            "provenance, local folder"),
    Variant("pipeline-s3", Kind.PIPELINE, "as pipeline, written to loopback S3 (moto)", output=Output.S3),
    Variant("no-qc", Kind.PIPELINE, "as pipeline, qc.enabled=false", qc=False),
    Variant("no-watermark", Kind.PIPELINE, "as pipeline, provenance.watermark=false", watermark=False),
    Variant("actors-1x2", Kind.PIPELINE, "as pipeline, 1 actor x 2 threads", threads=2),
    Variant("actors-1x1", Kind.PIPELINE, "as pipeline, 1 actor x 1 thread", threads=1),
    Variant("actors-2x1", Kind.PIPELINE, "as pipeline, 2 actors x 1 thread", actors=2, threads=1),
    Variant("actors-2x1-ray-niceness", Kind.PIPELINE, "as actors-2x1, QC and writers at Ray's worker niceness "
            "(compute.helper_niceness=null)", actors=2, threads=1, helper_niceness=False),
)  # fmt: skip
GPU_VARIANTS = (
    Variant("bare", Kind.BARE, "plain diffusers loop on the GPU"),
    Variant("pipeline", Kind.PIPELINE, "diffgen.jobs.api.run, 1 generation actor, QC + watermark + provenance, "
            "local folder"),
)  # fmt: skip
CPU_VARIANT_NAMES = tuple(v.name for v in CPU_VARIANTS)


def cpu_variants(names: list[str] | tuple[str, ...]) -> list[Variant]:
    """The named CPU variants in the registry's order (the order a session runs them)."""
    unknown = [n for n in names if n not in CPU_VARIANT_NAMES]
    if unknown:
        raise ValueError(f"Unknown variant '{unknown[0]}'. Choose from: {', '.join(CPU_VARIANT_NAMES)}")
    return [v for v in CPU_VARIANTS if v.name in names]
