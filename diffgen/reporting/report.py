"""The QC report of an output: counts by status and reason, score distributions, FID per group,
and the best- and worst-scoring images, as `OUTPUT/qc/report.json` and a self-contained
`OUTPUT/qc/report.html` (diffgen.reporting.html).

Pure bookkeeping over the index and the merged statistics: nothing here loads a model. The
Fréchet distances are computed once, here, from statistics the scoring actors merged.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from diffgen.dataset import storage
from diffgen.dataset.index import by_slot
from diffgen.dataset.layout import QC_DIR, REPORT_HTML, REPORT_JSON, UTILITY_JSON
from diffgen.metrics.frechet import FeatureStats, FeatureStatsError, FrechetReference
from diffgen.metrics.reservoir import Reservoir
from diffgen.reporting.distribution import distribution_report
from diffgen.reporting.html import render_html
from diffgen.reporting.versions import package_versions
from diffgen.schemas.distribution import DistributionReport
from diffgen.schemas.qc import QcSpec
from diffgen.schemas.record import RecordStatus
from diffgen.schemas.report import (
    Example,
    FidGroup,
    FidReport,
    FillGroup,
    FillReport,
    Histogram,
    QcReport,
    ScoreSummary,
    ShortRow,
)
from diffgen.schemas.utility import UtilityReport
from diffgen.stages.qc import ALL_GROUP

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 20

@dataclass(frozen=True)
class QcEvidence:
    """What the scoring actors sent back: merged per-group statistics and the reference's."""

    stats: dict[str, FeatureStats]
    covered: int
    reference: FeatureStats | None
    samples: dict[str, Reservoir] = field(default_factory=dict)  # per FID group: KID, CMMD, precision/recall
    label_samples: dict[str, Reservoir] = field(default_factory=dict)  # per utility label: the probes' features
    reference_sample: Reservoir | None = None


def summarize_scores(values: list[float], edges: tuple[float, float] | None = None) -> ScoreSummary:
    """Count, mean, quantiles and a histogram; `edges` fixes the histogram's range (else min..max)."""
    x = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if not x.size:
        return ScoreSummary(n=0)
    lo, hi = edges if edges is not None else (float(x.min()), float(x.max()))
    if hi <= lo:
        hi = lo + 1.0
    counts, bins = np.histogram(x, bins=HISTOGRAM_BINS, range=(lo, hi))
    p05, p50, p95 = np.quantile(x, [0.05, 0.5, 0.95])
    return ScoreSummary(
        n=int(x.size), mean=float(x.mean()), min=float(x.min()), p05=float(p05), p50=float(p50), p95=float(p95),
        max=float(x.max()), histogram=Histogram(edges=[float(b) for b in bins], counts=[int(c) for c in counts]),
    )  # fmt: skip


def fid_report(spec: QcSpec, evidence: QcEvidence, written: int) -> tuple[FidReport | None, str | None]:
    """FID of every group against the reference, or why there is none."""
    if evidence.reference is None and evidence.covered:
        return None, "no reference: set qc.reference (an image set) or qc.reference_stats to measure FID"
    if evidence.covered == 0:
        return None, "no image was scored in this run (all were committed earlier): run `diffgen qc OUTPUT`"
    if ALL_GROUP not in evidence.stats:
        return None, "no image passed the per-image checks, so there are no statistics to compare"
    ref = evidence.reference
    try:
        prepared = FrechetReference(ref)
    except FeatureStatsError as e:
        return None, f"reference statistics unusable: {e}"
    groups = []
    # Every group is measured against the whole reference: the overall number first, then by value.
    for name in [ALL_GROUP, *sorted(g for g in evidence.stats if g != ALL_GROUP)]:
        stats = evidence.stats[name]
        try:
            result = prepared.fid(stats)
        except FeatureStatsError as e:
            groups.append(FidGroup(group=name, fid=None, count=stats.count, reference_count=ref.count, note=str(e)))
            continue
        groups.append(FidGroup(group=name, fid=result.value, count=result.count, reference_count=ref.count,
                               rank_deficient=result.rank_deficient))  # fmt: skip
    overall = evidence.stats[ALL_GROUP]
    reference_uri = spec.reference if spec.reference is not None else spec.reference_stats
    report = FidReport(
        backbone=overall.backbone, resize=overall.resize, dim=overall.dim, reference=reference_uri or "",
        reference_count=ref.count, group_by=spec.fid_group_by, covered_images=overall.count, written_images=written,
        groups=groups,
    )  # fmt: skip
    return report, None


def _examples(rows: list[dict], key: str, n: int, group_by: str | None) -> tuple[list[Example], list[Example]]:
    ranked = sorted((r for r in rows if r.get(key) is not None and r.get("image_uri")), key=lambda r: r[key])
    if not ranked or n == 0:
        return [], []

    def example(r: dict) -> Example:
        group = None if group_by is None or r.get(group_by) is None else str(r[group_by])
        return Example(record_id=r["record_id"], prompt=r.get("prompt"), score=r[key], image_uri=r["image_uri"],
                       group=group)  # fmt: skip

    return [example(r) for r in ranked[::-1][:n]], [example(r) for r in ranked[:n]]


SHORT_ROWS_SHOWN = 50


def fill_report(rows: list[dict], group_by: str | None) -> FillReport | None:
    """Per slot (one image a row asks for, `slot_id`): filled or not, by which attempt; per manifest row and per
    value of `group_by`. Rows of an index written before slots existed count as attempt 0 of their own slot."""
    slots = by_slot(rows)
    if not slots:
        return None
    written = RecordStatus.WRITTEN.value
    per_row: dict[str, list[int]] = {}
    per_group: dict[str, list[int]] = {}
    row_group: dict[str, str | None] = {}
    first = 0
    for attempts in slots.values():
        filled = any(a["status"] == written for a in attempts)
        first += any(a["status"] == written and not a.get("attempt") for a in attempts)
        row_id = str(attempts[0].get("id"))
        counts = per_row.setdefault(row_id, [0, 0, 0])
        counts[0], counts[1], counts[2] = counts[0] + 1, counts[1] + filled, counts[2] + len(attempts)
        if group_by is not None:
            value = attempts[0].get(group_by)
            group = "__null__" if value is None else str(value)
            row_group[row_id] = group
            g = per_group.setdefault(group, [0, 0, 0])
            g[0], g[1], g[2] = g[0] + 1, g[1] + filled, g[2] + len(attempts)

    def fill(c: list[int]) -> FillGroup:
        return FillGroup(slots=c[0], filled=c[1], attempts=c[2], rate=round(c[1] / c[0], 6) if c[0] else 0.0)

    total = [sum(c[i] for c in per_row.values()) for i in range(3)]
    short = sorted(((rid, c) for rid, c in per_row.items() if c[1] < c[0]), key=lambda x: (x[1][1] / x[1][0], x[0]))
    return FillReport(
        overall=fill(total),
        first_attempt_accepted=first,
        first_attempt_acceptance=round(first / total[0], 6),
        attempts_per_slot=round(total[2] / total[0], 6),
        rows=len(per_row),
        rows_full=len(per_row) - len(short),
        short_rows=[ShortRow(id=rid, slots=c[0], filled=c[1], group=row_group.get(rid))
                    for rid, c in short[:SHORT_ROWS_SHOWN]],
        group_by=group_by,
        groups={k: fill(v) for k, v in sorted(per_group.items())},
    )


def build_report(
    output: str,
    spec: QcSpec,
    index: pa.Table,
    evidence: QcEvidence,
    *,
    created_at: datetime,
    rescored: pa.Table | None = None,
    fill_by: str | None = None,
) -> QcReport:
    """The report of an output's index; with `rescored` (written rows scored again), a rescore report."""
    rows = index.to_pylist()
    scored = rows if rescored is None else rescored.to_pylist()
    counts = Counter(r["status"] for r in rows)
    reasons: Counter[str] = Counter()
    for r in scored:
        for rejection in r.get("qc_reasons") or []:
            reasons[rejection["reason"]] += 1
    would_reject = None
    if rescored is not None:
        would_reject = sum(r["status"] == RecordStatus.REJECTED.value for r in scored)
    written = counts.get(RecordStatus.WRITTEN.value, 0)
    fid_part, fid_note = fid_report(spec, evidence, written)
    key = "clip_score" if any(r.get("clip_score") is not None for r in scored) else "pixel_std"
    kept = [r for r in scored if r["status"] in (RecordStatus.WRITTEN.value, None)]
    best, worst = _examples(kept, key, spec.report_examples, spec.fid_group_by)
    run_ids = {r.get("run_id") for r in rows if r.get("run_id")}
    return QcReport(
        output=output,
        run_id=run_ids.pop() if len(run_ids) == 1 else None,
        mode="run" if rescored is None else "rescore",
        created_at=created_at,
        thresholds=spec.model_dump(mode="json"),
        counts=dict(sorted(counts.items())),
        reasons=dict(sorted(reasons.items())),
        would_reject=would_reject,
        scores={
            "clip_score": summarize_scores([r.get("clip_score") for r in scored], edges=(0.0, 100.0)),
            "pixel_std": summarize_scores([r.get("pixel_std") for r in scored]),
        },
        fid=fid_part,
        fid_note=fid_note,
        fill=fill_report(rows, _fill_column(rows, fill_by or spec.fid_group_by)),
        distribution=_distribution(spec, evidence, fid_part),
        ranked_by=key if best else None,
        best=best,
        worst=worst,
        versions=package_versions(),
    )


def _distribution(spec: QcSpec, evidence: QcEvidence, fid: FidReport | None) -> DistributionReport | None:
    """KID, CMMD and precision/recall per group where FID was measured and a reference sample exists."""
    if fid is None or evidence.reference_sample is None or ALL_GROUP not in evidence.samples:
        return None
    return distribution_report(evidence.samples, evidence.reference_sample, fid.reference)


def _fill_column(rows: list[dict], column: str | None) -> str | None:
    return column if column is not None and rows and column in rows[0] else None


def write_report(report: QcReport) -> QcReport:
    """Write `qc/report.json` and `qc/report.html` under the report's output (the page with the output's
    qc/utility.json, when it has one); returns the report."""
    output = report.output
    storage.write_bytes(storage.join(output, REPORT_JSON), report.model_dump_json(indent=2).encode())
    utility_uri = storage.join(output, UTILITY_JSON)
    utility = None
    if storage.exists(utility_uri):
        utility = UtilityReport.model_validate_json(storage.read_bytes(utility_uri))
    storage.write_bytes(storage.join(output, REPORT_HTML), render_html(report, utility=utility).encode())
    overall = report.fid.groups[0].fid if report.fid else None
    log.info("QC report at %s: FID %s, %s", storage.join(output, QC_DIR), overall, report.reasons or "no rejections")
    return report
