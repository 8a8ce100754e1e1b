"""Small inline SVG charts for the self-contained report pages: a confusion matrix and a metric
plotted against a swept setting. Every label is HTML-escaped; nothing is fetched from anywhere."""

from __future__ import annotations

import html
import math


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def confusion_svg(matrix: list[list[int]], classes: list[str], title: str) -> str:
    """A heat map: rows are true classes, columns predicted; each cell shows its count, shaded by its
    share of the row (so a class's recall reads along its row whatever its size)."""
    cell, left, top = 44, 90, 64
    n = len(classes)
    w, h = left + n * cell + 10, top + n * cell + 10
    parts = [f"<text x='{left}' y='14' font-size='12' font-weight='bold'>{escape(title)}</text>",
             f"<text x='{left}' y='30' font-size='11'>predicted →</text>",
             f"<text x='4' y='{top - 6}' font-size='11'>true ↓</text>"]  # fmt: skip
    for j, c in enumerate(classes):
        x = left + j * cell + cell / 2
        parts.append(f"<text x='{x:.0f}' y='{top - 8}' font-size='10' text-anchor='middle'>{escape(c[:8])}</text>")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        y = top + i * cell
        parts.append(f"<text x='{left - 6}' y='{y + cell / 2 + 4:.0f}' font-size='10' text-anchor='end'>"
                     f"{escape(classes[i][:12])}</text>")  # fmt: skip
        for j, count in enumerate(row):
            share = count / total
            hue = "46,125,70" if i == j else "190,60,50"
            fill = f"rgba({hue},{0.08 + 0.85 * share:.2f})"
            text = "#fff" if share > 0.55 else "#222"
            parts.append(
                f"<rect x='{left + j * cell}' y='{y}' width='{cell - 2}' height='{cell - 2}' fill='{fill}'>"
                f"<title>true {escape(classes[i])}, predicted {escape(classes[j])}: {count}</title></rect>"
                f"<text x='{left + j * cell + cell / 2 - 1:.0f}' y='{y + cell / 2 + 4:.0f}' font-size='11' "
                f"text-anchor='middle' fill='{text}'>{count}</text>"
            )
    return f"<svg width='{w}' height='{h}' role='img' aria-label='{escape(title)}'>{''.join(parts)}</svg>"


def line_svg(title: str, xs: list[float | str], series: dict[str, list[float | None]], best: int | None = None) -> str:
    """One metric against one setting: a line per series (the other settings' values), points
    marked; `best` circles the best x of the first series. Categorical x values are spaced evenly."""
    w, h, pad = 320, 190, 36
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    positions = [float(x) for x in xs] if numeric else list(range(len(xs)))
    lo_x, hi_x = (min(positions), max(positions)) if positions else (0.0, 1.0)
    values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
    if not values:
        return f"<div><h3>{escape(title)}</h3><p class='muted'>no values</p></div>"
    lo_y, hi_y = min(values), max(values)
    if hi_y - lo_y < 1e-12:
        lo_y, hi_y = lo_y - 0.5, hi_y + 0.5
    if hi_x - lo_x < 1e-12:
        lo_x, hi_x = lo_x - 1, hi_x + 1

    def sx(x: float) -> float:
        return pad + (w - 2 * pad) * (x - lo_x) / (hi_x - lo_x)

    def sy(y: float) -> float:
        return h - pad - (h - 2 * pad) * (y - lo_y) / (hi_y - lo_y)

    colors = ["#2a6", "#36c", "#c63", "#939", "#996", "#399"]
    parts = []
    for k, (name, ys) in enumerate(series.items()):
        color = colors[k % len(colors)]
        points = [(sx(p), sy(v)) for p, v in zip(positions, ys) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='1.5'/>")
        for (x, y), v in zip(points, [v for v in ys if v is not None and math.isfinite(v)]):
            parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{color}'><title>{escape(name)}: {v:.4g}"
                         "</title></circle>")  # fmt: skip
        if len(series) > 1:
            parts.append(f"<text x='{w - pad + 4}' y='{pad + 12 * k}' font-size='10' fill='{color}'>{escape(name)}</text>")
    if best is not None:
        first = next(iter(series.values()))
        if first[best] is not None:
            parts.append(f"<circle cx='{sx(positions[best]):.1f}' cy='{sy(first[best]):.1f}' r='7' fill='none' "
                         "stroke='#c33' stroke-width='2'/>")  # fmt: skip
    ticks = "".join(f"<text x='{sx(p):.1f}' y='{h - pad + 14}' font-size='10' text-anchor='middle'>{escape(x)}</text>"
                    for p, x in zip(positions, xs))  # fmt: skip
    axis = (f"<text x='4' y='{sy(hi_y) + 4:.1f}' font-size='10'>{hi_y:.3g}</text>"
            f"<text x='4' y='{sy(lo_y) + 4:.1f}' font-size='10'>{lo_y:.3g}</text>"
            f"<line x1='{pad}' x2='{w - pad}' y1='{h - pad}' y2='{h - pad}' stroke='#bbb'/>")  # fmt: skip
    return (f"<div><h3>{escape(title)}</h3><svg width='{w + 60}' height='{h}' role='img' aria-label='{escape(title)}'>"
            f"{axis}{ticks}{''.join(parts)}</svg></div>")  # fmt: skip
