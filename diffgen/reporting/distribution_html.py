"""The KID / CMMD / precision-recall table of qc/report.html, under the FID table."""

from __future__ import annotations

from diffgen.reporting.charts import escape
from diffgen.schemas.distribution import DistributionReport


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def distribution_section(d: DistributionReport | None) -> str:
    if d is None:
        return ""
    head = (f"<h3>Beyond FID: KID, CMMD, precision / recall / density / coverage</h3><p>backbone <b>"
            f"{escape(d.backbone)}</b> · seeded samples of at most {d.sample_size} images per group (seed "
            f"{d.sample_seed}) · reference sample {d.reference_sample_count} images · k = {d.k}</p>")  # fmt: skip
    if d.cmmd_note:
        head += f"<p class='muted'>{escape(d.cmmd_note)}</p>"
    header = ["group", "sample (of)", "KID ± s.e.", "CMMD", "precision", "recall", "density", "coverage", "note"]
    rows = []
    for g in d.groups:
        kid = "–" if g.kid is None else f"{g.kid:.4f} ± {g.kid_standard_error:.4f}"
        rows.append([escape(g.group), f"{g.sample_count} ({g.offered})", kid, _num(g.cmmd), _num(g.precision, 3),
                     _num(g.recall, 3), _num(g.density, 3), _num(g.coverage, 3), escape(g.note or "")])  # fmt: skip
    th = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"{head}<table><tr>{th}</tr>{body}</table>"
