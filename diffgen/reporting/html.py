"""qc/report.html: the QC report as one self-contained page (inline CSS, SVG charts, data-URI thumbnails).

Opens from object storage or a laptop with no network and no other file. Every string that came
from outside (prompts, ids, URIs, group values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import logging

from PIL import Image

from diffgen.dataset import storage
from diffgen.reporting.distribution_html import distribution_section
from diffgen.reporting.utility_html import utility_section
from diffgen.schemas.report import Example, QcReport, ScoreSummary
from diffgen.schemas.utility import UtilityReport

log = logging.getLogger(__name__)

THUMBNAIL_PX = 160

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.25em .75em;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}.warn{color:#a40}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
figure{margin:0;border:1px solid #eee;padding:6px}figure img{width:100%;image-rendering:pixelated}
figcaption{font-size:12px;word-break:break-word}.charts{display:flex;gap:2em;flex-wrap:wrap}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _histogram_svg(title: str, summary: ScoreSummary, threshold: float | None) -> str:
    if summary.histogram is None:
        return f"<div><h3>{_e(title)}</h3><p class='muted'>no scores</p></div>"
    w, h, pad = 360, 160, 24
    edges, counts = summary.histogram.edges, summary.histogram.counts
    top = max(counts) or 1
    bar_w = (w - 2 * pad) / len(counts)
    bars = []
    for i, c in enumerate(counts):
        bh = (h - 2 * pad) * c / top
        tip = f"<title>{edges[i]:.2f}–{edges[i + 1]:.2f}: {c}</title>"
        bars.append(f"<rect x='{pad + i * bar_w:.1f}' y='{h - pad - bh:.1f}' width='{bar_w - 1:.1f}' "
                    f"height='{bh:.1f}' fill='#4a7'>{tip}</rect>")  # fmt: skip
    lo, hi = edges[0], edges[-1]
    marks = ""
    if threshold is not None and lo <= threshold <= hi:
        x = pad + (w - 2 * pad) * (threshold - lo) / (hi - lo)
        marks = f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{pad / 2}' y2='{h - pad}' stroke='#c33' stroke-dasharray='4'/>"
    axis = (f"<text x='{pad}' y='{h - 6}' font-size='11'>{lo:.1f}</text>"
            f"<text x='{w - pad}' y='{h - 6}' font-size='11' text-anchor='end'>{hi:.1f}</text>"
            f"<text x='{pad}' y='{pad - 8}' font-size='11'>max bin {top}</text>")  # fmt: skip
    stats = f"n {summary.n} · mean {_num(summary.mean)} · p05 {_num(summary.p05)} · p50 {_num(summary.p50)}"
    return (f"<div><h3>{_e(title)}</h3><svg width='{w}' height='{h}' role='img' aria-label='{_e(title)} histogram'>"
            f"{''.join(bars)}{marks}{axis}</svg><div class='muted'>{stats}</div></div>")  # fmt: skip


def _thumbnail(uri: str) -> str | None:
    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buf = io.BytesIO()
            image.save(buf, format="PNG")
    except Exception as e:  # noqa: BLE001 - a missing picture must not cost the report
        log.warning("report: no thumbnail for %s (%s)", uri, e)
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _grid(examples: list[Example], ranked_by: str | None) -> str:
    if not examples:
        return "<p class='muted'>no written images to show</p>"
    cells = []
    for ex in examples:
        src = _thumbnail(ex.image_uri)
        img = f"<img src='{src}' alt='{_e(ex.record_id)}'>" if src else "<p class='warn'>image unreadable</p>"
        group = f" · {_e(ex.group)}" if ex.group is not None else ""
        caption = f"<b>{_e(ranked_by)} {_num(ex.score)}</b>{group}<br>{_e(ex.prompt or '')}<br>"
        cells.append(
            f"<figure>{img}<figcaption>{caption}<span class='muted'>{_e(ex.record_id)}</span></figcaption></figure>"
        )
    return f"<div class='grid'>{''.join(cells)}</div>"


def _table(header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    th = "".join(f"<th class='n'>{_e(h)}</th>" if i in numeric else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f"<td class='n'>{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _fid_section(report: QcReport) -> str:
    if report.fid is None:
        return f"<p class='muted'>{_e(report.fid_note or 'no FID')}</p>"
    f = report.fid
    head = (f"<p>backbone <b>{_e(f.backbone)}</b> · resize {_e(f.resize)} · dim {f.dim} · reference "
            f"{_e(f.reference)} ({f.reference_count} images) · covers {f.covered_images} of {f.written_images} "
            "written images</p>")  # fmt: skip
    if f.covered_images < f.written_images:
        head += ("<p class='warn'>The statistics cover fewer images than were written (a resumed run or a lost "
                 "scoring actor): run <code>diffgen qc OUTPUT</code> to measure the whole output.</p>")  # fmt: skip
    rows = []
    for g in f.groups:
        note = _e(g.note) if g.note else ("set smaller than feature dim: compare only at equal size"
                                           if g.rank_deficient else "")  # fmt: skip
        rows.append([_e(g.group), _num(g.fid, 3), str(g.count), str(g.reference_count), note])
    return head + _table(["group", "FID", "images", "reference images", "note"], rows, {1, 2, 3})


def _fill_section(report: QcReport) -> str:
    f = report.fill
    if f is None:
        return ""
    o = f.overall
    head = (f"<p><b>{o.filled}</b> of {o.slots} slots filled ({100 * o.rate:.1f} %) with {o.attempts} images made: "
            f"{100 * f.first_attempt_acceptance:.1f} % accepted at the first attempt, {f.attempts_per_slot:.2f} "
            f"attempts per slot; {f.rows_full} of {f.rows} rows full.</p>")  # fmt: skip
    groups = ""
    if f.groups:
        rows = [[_e(k), str(g.slots), str(g.filled), str(g.attempts), f"{100 * g.rate:.1f} %"]
                for k, g in f.groups.items()]  # fmt: skip
        groups = _table([f.group_by or "group", "slots", "filled", "attempts", "fill rate"], rows, {1, 2, 3, 4})
    short = ""
    if f.short_rows:
        rows = [[_e(r.id), _e(r.group or ""), str(r.slots), str(r.filled)] for r in f.short_rows]
        short = "<h3>Rows left short</h3>" + _table(["id", f.group_by or "group", "asked", "filled"], rows, {2, 3})
    return f"<h2>Fill</h2>{head}{groups}{short}"


def render_html(report: QcReport, utility: UtilityReport | None = None) -> str:
    t = report.thresholds
    counts = _table(["status", "images"], [[_e(k), str(v)] for k, v in report.counts.items()], {1})
    reasons = (_table(["reason", "images"], [[_e(k), str(v)] for k, v in report.reasons.items()], {1})
               if report.reasons else "<p class='muted'>no QC rejections</p>")  # fmt: skip
    would = (
        ""
        if report.would_reject is None
        else (f"<p><b>{report.would_reject}</b> written images fail today's thresholds (the index is unchanged).</p>")
    )
    charts = (_histogram_svg("CLIP score", report.scores["clip_score"], t.get("min_clip_score"))
              + _histogram_svg("pixel std (flatness)", report.scores["pixel_std"], t.get("flat_std")))  # fmt: skip
    key = _e(report.ranked_by or "score")
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(report.versions.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diffgen QC · {_e(report.run_id or report.output)}</title>
<style>{_CSS}</style></head><body>
<h1>QC report · {_e(report.run_id or "")}</h1>
<p class="muted">{_e(report.output)} · {_e(report.mode)} · {_e(report.created_at.isoformat())}</p>
<h2>Counts</h2><div class="charts">{counts}{reasons}</div>{would}
{_fill_section(report)}
<h2>Scores</h2><div class="charts">{charts}</div>
<h2>FID</h2>{_fid_section(report)}{distribution_section(report.distribution)}
{"" if utility is None else utility_section(utility)}
<h2>Highest {key}: {len(report.best)} written images</h2>{_grid(report.best, report.ranked_by)}
<h2>Lowest {key}: {len(report.worst)} written images</h2>{_grid(report.worst, report.ranked_by)}
<h2>Thresholds</h2>{_table(["setting", "value"], [[_e(k), _e(v)] for k, v in t.items()], set())}
<p class="muted">{versions}</p>
</body></html>
"""
