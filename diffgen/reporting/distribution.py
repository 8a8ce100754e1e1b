"""KID, CMMD and precision / recall / density / coverage per group for qc/report.json, from the seeded
feature samples the scoring actors kept (`diffgen.metrics.reservoir`) and the reference's sample.

Pure bookkeeping around the kernels in `diffgen.metrics.mmd` and `diffgen.metrics.prdc`: every group is
measured against the whole reference sample, as FID is; a number that cannot be computed for a group
(too small a sample) is null with a note naming why.
"""

from __future__ import annotations

from diffgen.metrics.mmd import KernelDistanceError, cmmd_estimate, kid_estimate
from diffgen.metrics.prdc import NEAREST_K, ManifoldError, prdc
from diffgen.metrics.reservoir import Reservoir
from diffgen.schemas.distribution import DistributionGroup, DistributionReport
from diffgen.stages.qc import ALL_GROUP


def _group(name: str, sample: Reservoir, reference: Reservoir, with_cmmd: bool) -> DistributionGroup:
    x, y = sample.features, reference.features
    group = DistributionGroup(group=name, sample_count=len(sample), offered=sample.offered)
    notes = []
    try:
        group.kid, group.kid_standard_error = kid_estimate(x, y)
    except KernelDistanceError as e:
        notes.append(f"KID: {e}")
    if with_cmmd:
        group.cmmd = cmmd_estimate(x, y)
    try:
        scores = prdc(x, y, backbone=sample.backbone, k=NEAREST_K)
        group.precision, group.recall = scores.precision, scores.recall
        group.density, group.coverage = scores.density, scores.coverage
    except ManifoldError as e:
        notes.append(f"precision/recall: {e}")
    group.note = "; ".join(notes) or None
    return group


def distribution_report(samples: dict[str, Reservoir], reference: Reservoir, reference_uri: str) -> DistributionReport:
    """Every group's sample against the reference sample (one backbone: the FID backbone)."""
    with_cmmd = reference.backbone.startswith("clip:")
    names = [ALL_GROUP, *sorted(g for g in samples if g != ALL_GROUP)] if ALL_GROUP in samples else sorted(samples)
    return DistributionReport(
        backbone=reference.backbone, resize=reference.resize, dim=reference.dim, k=NEAREST_K,
        sample_size=reference.capacity, sample_seed=reference.seed, reference=reference_uri,
        reference_sample_count=len(reference),
        cmmd_note=None if with_cmmd else "CMMD is defined on CLIP embeddings: set qc.fid_backbone to clip",
        groups=[_group(name, samples[name], reference, with_cmmd) for name in names],
    )  # fmt: skip
