"""The QC report from an index and merged statistics: counts, reasons, FID per group, and the page."""

import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pytest

from diffgen.dataset import storage
from diffgen.metrics.frechet import FeatureStats, frechet_distance
from diffgen.provenance.png import encode_png
from diffgen.reporting.report import QcEvidence, build_report, summarize_scores, write_report
from diffgen.schemas.qc import QcSpec
from diffgen.schemas.record import QcReason, Rejection
from diffgen.schemas.report import QcReport
from diffgen.stages.qc import ALL_GROUP

NOW = datetime(2026, 1, 2, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script> & a red square"


def _stats(features: np.ndarray) -> FeatureStats:
    return FeatureStats("pixels-16", "pil-bicubic-antialias-16x16", features.shape[1]).update(features)


@pytest.fixture
def output(tmp_path):
    """An output of 6 records: 4 written (labels a/b), 1 rejected by QC, 1 failed, with real PNGs."""
    out = str(tmp_path / "out")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(6):
        status = "written" if k < 4 else ("rejected" if k == 4 else "failed")
        uri = storage.join(out, "images", f"r{k}.png") if status == "written" else None
        if uri:
            storage.write_bytes(uri, encode_png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
        rows.append({
            "record_id": f"r{k}", "run_id": "run-1", "status": status, "image_uri": uri,
            "prompt": HOSTILE if k == 0 else f"prompt {k}", "label": "ab"[k % 2],
            "clip_score": [30.0, 10.0, 25.0, 20.0, 5.0, None][k], "pixel_std": [50.0, 40, 30, 20, 1.0, None][k],
            "qc_reasons": [[], [], [], [], [{"reason": "clip_score", "detail": "5.0 < 8.0"},
                           {"reason": "flat", "detail": None}, {"reason": "duplicate", "detail": "r0"}], None][k],
        })  # fmt: skip
    return out, pa.Table.from_pylist(rows)


def _evidence(n_ref: int = 40) -> tuple[QcEvidence, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    feats = {"a": rng.normal(0, 1, (20, 3)), "b": rng.normal(1, 1, (30, 3))}
    reference = _stats(rng.normal(0, 1, (n_ref, 3)))
    stats = {"a": _stats(feats["a"]), "b": _stats(feats["b"]), ALL_GROUP: _stats(np.vstack([feats["a"], feats["b"]]))}
    return QcEvidence(stats, covered=50, reference=reference), feats


def test_rejections_are_typed_and_worded_as_the_error_column_words_them():
    cases = [
        (Rejection(QcReason.CLIP_SCORE, "1.0 < 2.0"), "clip_score 1.0 < 2.0"),
        (Rejection(QcReason.BLACK), "black"),
        (Rejection(QcReason.FLAT), "flat"),
        (Rejection(QcReason.DUPLICATE, "x"), "duplicate of x"),
        (Rejection(QcReason.REFERENCE_DUPLICATE, "ref/a.png"), "reference duplicate of ref/a.png"),
    ]
    assert [r.describe() for r, _ in cases] == [text for _, text in cases]
    assert Rejection(QcReason.FLAT).to_row() == {"reason": "flat", "detail": None}


def test_score_summary_matches_numpy_and_ignores_missing():
    values = [1.0, 2.0, None, 3.0, 10.0, float("nan")]
    s = summarize_scores(values, edges=(0.0, 10.0))
    x = np.array([1.0, 2.0, 3.0, 10.0])
    assert s.n == 4 and s.mean == pytest.approx(x.mean()) and s.p50 == pytest.approx(np.median(x))
    assert s.histogram.edges[0] == 0.0 and s.histogram.edges[-1] == 10.0 and sum(s.histogram.counts) == 4
    assert summarize_scores([None]).n == 0 and summarize_scores([None]).histogram is None


def test_fid_per_group_equals_the_kernel_on_the_same_features(output):
    out, index = output
    evidence, feats = _evidence()
    spec = QcSpec(enabled=True, reference_stats="ref.npz", fid_group_by="label", min_clip_score=8.0, clip_model="c")
    report = build_report(out, spec, index, evidence, created_at=NOW)
    ref = evidence.reference
    by_group = {g.group: g for g in report.fid.groups}
    assert list(by_group) == [ALL_GROUP, "a", "b"]
    for name, x in feats.items():
        expected = frechet_distance(x.mean(0), np.cov(x, rowvar=False), ref.mean, ref.covariance)
        assert by_group[name].fid == pytest.approx(expected, rel=1e-9)
        assert by_group[name].count == len(x) and by_group[name].reference_count == 40
    f = report.fid
    assert (f.backbone, f.dim, f.reference, f.group_by) == ("pixels-16", 3, "ref.npz", "label")
    assert (f.covered_images, f.written_images) == (50, 4)
    assert report.counts == {"failed": 1, "rejected": 1, "written": 4}
    assert report.reasons == {"clip_score": 1, "duplicate": 1, "flat": 1}
    assert report.scores["clip_score"].n == 5 and report.scores["clip_score"].min == 5.0
    # Best and worst come from written images only, ranked by CLIP score.
    assert [e.record_id for e in report.best] == ["r0", "r2", "r3", "r1"]
    assert [e.record_id for e in report.worst] == ["r1", "r3", "r2", "r0"]
    assert report.best[0].group == "a" and report.run_id == "run-1" and report.mode == "run"


def test_groups_too_small_for_a_covariance_get_a_note_not_a_number(output):
    out, index = output
    evidence, _ = _evidence()
    evidence.stats["tiny"] = _stats(np.ones((1, 3)))
    report = build_report(out, QcSpec(enabled=True), index, evidence, created_at=NOW)
    tiny = next(g for g in report.fid.groups if g.group == "tiny")
    assert tiny.fid is None and "at least 2" in tiny.note


def test_no_reference_and_nothing_scored_say_why(output):
    out, index = output
    evidence, _ = _evidence()
    no_ref = build_report(out, QcSpec(enabled=True), index, QcEvidence(evidence.stats, 50, None), created_at=NOW)
    assert no_ref.fid is None and "qc.reference" in no_ref.fid_note
    one = QcEvidence(evidence.stats, 50, _stats(np.ones((1, 3))))
    assert "at least 2 reference images" in build_report(out, QcSpec(), index, one, created_at=NOW).fid_note
    nothing = build_report(out, QcSpec(enabled=True), index, QcEvidence({}, 0, None), created_at=NOW)
    assert nothing.fid is None and "diffgen qc" in nothing.fid_note


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs, self.links, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.srcs += [a["src"]] if "src" in a else []
        self.links += [a["href"]] if "href" in a else []

    def handle_data(self, data):
        self.text.append(data)


def test_report_files_are_written_and_the_page_is_self_contained(output):
    out, index = output
    evidence, _ = _evidence()
    spec = QcSpec(enabled=True, reference_stats="ref.npz", fid_group_by="label", report_examples=2)
    report = write_report(build_report(out, spec, index, evidence, created_at=NOW))

    saved = QcReport.model_validate(json.loads(storage.read_bytes(storage.join(out, "qc", "report.json"))))
    assert saved == report
    page = storage.read_bytes(storage.join(out, "qc", "report.html")).decode()
    parsed = _Page()
    parsed.feed(page)
    # No script runs and nothing is fetched: the hostile prompt is text, every image is inline.
    assert "script" not in parsed.tags and HOSTILE in "".join(parsed.text)
    assert parsed.links == [] and len(parsed.srcs) == 4
    assert all(src.startswith("data:image/png;base64,") for src in parsed.srcs)
    assert parsed.tags.count("svg") == 2 and parsed.tags.count("rect") >= 20
    fid_cells = re.findall(r"<td class='n'>(\d+\.\d{3})</td>", page)
    assert fid_cells == [f"{g.fid:.3f}" for g in report.fid.groups]


def test_a_missing_image_costs_its_thumbnail_not_the_report(output):
    out, index = output
    storage.delete(storage.join(out, "images", "r0.png"))
    write_report(build_report(out, QcSpec(report_examples=1), index, QcEvidence({}, 0, None), created_at=NOW))
    page = storage.read_bytes(storage.join(out, "qc", "report.html")).decode()
    assert "image unreadable" in page


def test_fill_counts_slots_attempts_rows_and_groups_and_the_page_shows_them(tmp_path):
    """Row a: 2 slots, one filled at attempt 0, one by attempt 2; row b: 1 slot out of attempts; row c: old index
    rows without slot columns count as attempt 0 of their own slot."""
    def row(rid, slot, attempt, status, row_id, label):
        return {"record_id": rid, "slot_id": slot, "attempt": attempt, "status": status, "id": row_id,
                "label": label, "run_id": "r", "image_uri": None, "clip_score": None, "pixel_std": None,
                "qc_reasons": None}  # fmt: skip

    rows = [row("s1", "s1", 0, "written", "a", "cat"),
            row("s2", "s2", 0, "rejected", "a", "cat"), row("s2b", "s2", 1, "rejected", "a", "cat"),
            row("s2c", "s2", 2, "written", "a", "cat"),
            row("s3", "s3", 0, "rejected", "b", "dog"), row("s3b", "s3", 1, "failed", "b", "dog"),
            row("s4", None, None, "written", "c", "dog")]  # fmt: skip
    index = pa.Table.from_pylist(rows)
    out = str(tmp_path / "out")
    report = build_report(out, QcSpec(enabled=True), index, QcEvidence({}, 0, None), created_at=NOW, fill_by="label")
    f = report.fill
    assert (f.overall.slots, f.overall.filled, f.overall.attempts) == (4, 3, 7)
    assert (f.first_attempt_accepted, f.first_attempt_acceptance, f.attempts_per_slot) == (2, 0.5, 1.75)
    assert (f.rows, f.rows_full) == (3, 2) and [(r.id, r.slots, r.filled, r.group) for r in f.short_rows] == [
        ("b", 1, 0, "dog")]
    assert {k: (g.slots, g.filled, g.attempts) for k, g in f.groups.items()} == {"cat": (2, 2, 4), "dog": (2, 1, 3)}
    assert f.groups["dog"].rate == 0.5
    # Without fill_by the groups follow qc.fid_group_by; a column the index lacks gives none.
    assert build_report(out, QcSpec(enabled=True, fid_group_by="label"), index, QcEvidence({}, 0, None),
                        created_at=NOW).fill.group_by == "label"  # fmt: skip
    assert build_report(out, QcSpec(enabled=True), index, QcEvidence({}, 0, None), created_at=NOW,
                        fill_by="colour").fill.groups == {}  # fmt: skip
    write_report(report)
    page = (tmp_path / "out" / "qc" / "report.html").read_text()
    assert "<b>3</b> of 4 slots filled (75.0 %) with 7 images made: 50.0 % accepted at the first attempt" in page
    assert "Rows left short" in page and "<td>dog</td>" in page
