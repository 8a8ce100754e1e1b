"""The sweep's bookkeeping: the grid, point names, scores read back, the best point per metric, the page."""

import json
from datetime import UTC, datetime

import pytest

from diffgen.dataset import storage
from diffgen.reporting.sweep import best_points, build_sweep, grid_points, parse_grid, point_metrics, point_name
from diffgen.reporting.sweep import render_sweep_html
from diffgen.schemas.job import JobSpecError
from diffgen.schemas.sweep import SweepPoint


def test_the_grid_is_every_combination_in_order():
    grid = parse_grid(["sampler.guidance_scale=1.5,3", "sampler.steps=10,20,30"])
    assert grid == {"sampler.guidance_scale": [1.5, 3], "sampler.steps": [10, 20, 30]}
    points = grid_points(grid)
    assert len(points) == 6 and points[0] == {"sampler.guidance_scale": 1.5, "sampler.steps": 10}
    assert point_name(points[-1]) == "guidance_scale-3_steps-30"
    assert point_name({"sampler.scheduler": "dpmpp_2m/karras"}) == "scheduler-dpmpp_2m_karras"


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["sampler.steps"], "expected KEY=V1,V2"),
        (["sampler.steps=10", "sampler.steps=20"], "given twice"),
        (["sampler.steps=10,10"], "repeated"),
        (["output=a,b"], "sets each point's output"),
        ([], "at least one --grid"),
    ],
)
def test_bad_grids_are_refused_by_name(items, message):
    with pytest.raises(JobSpecError, match=message):
        parse_grid(items)


def _point(name: str, guidance: float, **metrics) -> SweepPoint:
    return SweepPoint(name=name, settings={"sampler.guidance_scale": guidance}, output=f"o/{name}",
                      status="complete", resumed=False, metrics=metrics)  # fmt: skip


def test_the_best_point_per_metric_follows_its_direction():
    points = [_point("a", 1.5, fid=30.0, clip_score=20.0), _point("b", 3, fid=10.0, clip_score=25.0),
              _point("c", 7.5, fid=None, clip_score=22.0)]  # fmt: skip
    best = {m.name: m.best for m in best_points(points)}
    assert best["fid"] == "b" and best["clip_score"] == "b" and best["kid"] is None
    report = build_sweep("job.yaml", "out", {"sampler.guidance_scale": [1.5, 3, 7.5]}, points,
                         created_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    page = render_sweep_html(report)
    assert "fid vs sampler.guidance_scale" in page and "<b>10</b>" in page and "<svg" in page


def test_scores_are_read_back_from_a_points_output(tmp_path):
    out = str(tmp_path)
    storage.write_bytes(storage.join(out, "run.json"), json.dumps(
        {"images_per_second": 2.5, "counts": {"images_expected": 10, "images_written": 8}}).encode())  # fmt: skip
    report = {"scores": {"clip_score": {"mean": 31.0}}, "fid": {"groups": [{"group": "__all__", "fid": 4.0}]},
              "distribution": {"groups": [{"group": "__all__", "kid": 0.1, "precision": 0.9}]}}  # fmt: skip
    storage.write_bytes(storage.join(out, "qc", "report.json"), json.dumps(report).encode())
    found = point_metrics(out)
    assert (found["images_per_second"], found["kept_fraction"], found["clip_score"]) == (2.5, 0.8, 31.0)
    assert (found["fid"], found["kid"], found["precision"], found["utility_ratio"]) == (4.0, 0.1, 0.9, None)
