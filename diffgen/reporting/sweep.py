"""A sweep's bookkeeping (`diffgen sweep`): the grid of settings, each point's name and scores, the
best point per metric, and sweep.json / sweep.html. Nothing here runs a model: each point's scores
are read back from its own output (run.json, qc/report.json, qc/utility.json).
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from typing import Any, Literal

import yaml

from diffgen.dataset import storage
from diffgen.dataset.layout import REPORT_JSON, RUN_FILE, SWEEP_HTML, SWEEP_JSON, UTILITY_JSON
from diffgen.reporting.charts import escape, line_svg
from diffgen.reporting.versions import package_versions
from diffgen.schemas.job import JobSpecError
from diffgen.schemas.sweep import Metric, SweepPoint, SweepReport
from diffgen.stages.qc import ALL_GROUP

# name -> (which way is better, what it is)
METRICS: dict[str, tuple[Literal["higher", "lower"], str]] = {
    "clip_score": ("higher", "mean CLIP score of the scored images"),
    "kept_fraction": ("higher", "written images / images asked for (what QC kept)"),
    "fid": ("lower", "FID of all written images against qc.reference"),
    "kid": ("lower", "KID against qc.reference"),
    "cmmd": ("lower", "CMMD against qc.reference (CLIP backbone only)"),
    "precision": ("higher", "k-NN precision against qc.reference (fidelity)"),
    "recall": ("higher", "k-NN recall against qc.reference (diversity)"),
    "density": ("higher", "k-NN density against qc.reference"),
    "coverage": ("higher", "k-NN coverage of qc.reference"),
    "synthetic_accuracy": ("higher", "accuracy on real test images of a probe trained on the synthetic images"),
    "utility_ratio": ("higher", "synthetic-trained / real-trained probe accuracy on real test images"),
    "augmentation_gain": ("higher", "accuracy gained by adding the synthetic images to a few real ones"),
    "images_per_second": ("higher", "images written per second of the point's run"),
}
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`--grid KEY=V1,V2,...` items -> {KEY: [values]}; values are YAML scalars (so `3` is an int)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()] if sep else []
        if not key or not values:
            raise JobSpecError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. sampler.guidance_scale=1.5,3,7.5")
        if key in grid:
            raise JobSpecError(f"--grid {key}: given twice; list all its values in one --grid")
        if len(set(map(repr, values))) != len(values):
            raise JobSpecError(f"--grid {key}: a value is repeated in {raw!r}")
        if key in ("output", "manifest", "run_id"):
            raise JobSpecError(f"--grid {key}: a sweep sets each point's {key} itself")
        grid[key] = values
    if not grid:
        raise JobSpecError("a sweep needs at least one --grid KEY=V1,V2,...")
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(settings: dict[str, Any]) -> str:
    """`guidance_scale-1.5_steps-10`: the last part of each key and its value, safe in a URI and a run id."""
    parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in settings.items()]
    return _NAME_UNSAFE.sub("_", "_".join(parts)).strip("_.-")[:100] or "point"


def _read_json(uri: str) -> dict | None:
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def point_metrics(output: str) -> dict[str, float | None]:
    """Every metric of `METRICS` from a point's output (null where the output has no such number)."""
    found: dict[str, float | None] = dict.fromkeys(METRICS)
    run = _read_json(storage.join(output, RUN_FILE))
    if run:
        found["images_per_second"] = run.get("images_per_second")
        counts = run.get("counts") or {}
        if counts.get("images_expected"):
            found["kept_fraction"] = counts["images_written"] / counts["images_expected"]
    report = _read_json(storage.join(output, REPORT_JSON))
    if report:
        found["clip_score"] = (report.get("scores") or {}).get("clip_score", {}).get("mean")
        overall = [g for g in (report.get("fid") or {}).get("groups", []) if g["group"] == ALL_GROUP]
        found["fid"] = overall[0]["fid"] if overall else None
        groups = [g for g in (report.get("distribution") or {}).get("groups", []) if g["group"] == ALL_GROUP]
        for name in ("kid", "cmmd", "precision", "recall", "density", "coverage"):
            found[name] = groups[0].get(name) if groups else None
    utility = _read_json(storage.join(output, UTILITY_JSON))
    if utility:
        found["utility_ratio"] = utility["ratio"]["value"]
        found["augmentation_gain"] = utility["augmentation_gain"]["value"]
        synthetic = [p for p in utility["probes"] if p["name"] == "synthetic"]
        found["synthetic_accuracy"] = synthetic[0]["accuracy"]["value"] if synthetic else None
    return found


def best_points(points: list[SweepPoint]) -> list[Metric]:
    metrics = []
    for name, (better, note) in METRICS.items():
        scored = [(p.metrics.get(name), p.name) for p in points if p.metrics.get(name) is not None]
        best = None
        if scored:
            best = (max if better == "higher" else min)(scored, key=lambda s: s[0])[1]
        metrics.append(Metric(name=name, better=better, best=best, note=note))
    return metrics


def build_sweep(job: str, output: str, grid: dict[str, list[Any]], points: list[SweepPoint],
                created_at: datetime) -> SweepReport:  # fmt: skip
    return SweepReport(job=job, output=output, created_at=created_at, grid=grid, points=points,
                       metrics=best_points(points), versions=package_versions())  # fmt: skip


def render_sweep_html(report: SweepReport) -> str:
    """One page: the table of every point's scores (the best of each metric in bold), then each metric
    plotted against each swept setting, one line per combination of the other settings."""
    present = [m for m in report.metrics if any(p.metrics.get(m.name) is not None for p in report.points)]
    keys = list(report.grid)
    header = "".join(f"<th>{escape(k)}</th>" for k in keys) + "".join(
        f"<th>{escape(m.name)} ({'↑' if m.better == 'higher' else '↓'})</th>" for m in present)
    rows = []
    for p in report.points:
        cells = "".join(f"<td>{escape(p.settings[k])}</td>" for k in keys)
        for m in present:
            v = p.metrics.get(m.name)
            text = "–" if v is None else f"{v:.4g}"
            cells += f"<td><b>{text}</b></td>" if m.best == p.name else f"<td>{text}</td>"
        rows.append(f"<tr>{cells}<td class='muted'>{escape(p.status or '')}{' (resumed)' if p.resumed else ''}"
                    "</td></tr>")  # fmt: skip
    best = "".join(f"<li><b>{escape(m.name)}</b> ({m.better} is better): {escape(m.best)} "
                   f"<span class='muted'>{escape(m.note or '')}</span></li>" for m in present)  # fmt: skip
    charts = []
    for key in keys:
        others = [k for k in keys if k != key]
        xs = report.grid[key]
        for m in present:
            series: dict[str, list[float | None]] = {}
            for combo in itertools.product(*(report.grid[k] for k in others)):
                label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, combo)) or m.name
                fixed = dict(zip(others, combo))
                series[label] = [next((p.metrics.get(m.name) for p in report.points
                                       if p.settings[key] == x and all(p.settings[k] == v for k, v in fixed.items())),
                                      None) for x in xs]  # fmt: skip
            charts.append(line_svg(f"{m.name} vs {key}", xs, series))
    css = ("body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}"
           "table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}"
           ".muted{color:#777}.charts{display:flex;gap:1em;flex-wrap:wrap}h3{font-size:13px;margin:.5em 0}")  # fmt: skip
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>diffgen sweep</title>"
            f"<style>{css}</style></head><body><h1>Sweep · {escape(report.job)}</h1>"
            f"<p class='muted'>{escape(report.output)} · {len(report.points)} points · "
            f"{escape(report.created_at.isoformat())}</p><h2>Best point per metric</h2><ul>{best}</ul>"
            f"<h2>Points</h2><table><tr>{header}<th></th></tr>{''.join(rows)}</table>"
            f"<h2>Each metric against each setting</h2><div class='charts'>{''.join(charts)}</div>"
            "</body></html>\n")  # fmt: skip


def write_sweep(report: SweepReport) -> SweepReport:
    storage.write_bytes(storage.join(report.output, SWEEP_JSON), report.model_dump_json(indent=2).encode())
    storage.write_bytes(storage.join(report.output, SWEEP_HTML), render_sweep_html(report).encode())
    return report
