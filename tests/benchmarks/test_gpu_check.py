"""The GPU check's CPU smoke (the same steps as on a lent GPU, on the embedded default) and the stage-cost
benchmark at a small size: both must work before a GPU is lent, so the loan is spent measuring."""

import json
import subprocess
import sys

import pytest

from benchmarks import gpu_check, stage_costs
from tests.conftest import REPO


@pytest.mark.slow
def test_stage_costs_prices_every_stage_and_chooses_a_png_level(tmp_path):
    out = tmp_path / "costs.json"
    assert stage_costs.main(["--quick", "--sizes", "128", "--clip", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["sizes"]["128"]
    assert set(result["png"]) == {str(level) for level in stage_costs.PNG_LEVELS}
    assert result["png"]["0"]["bytes"] > result["png"]["9"]["bytes"]  # level 0 stores, level 9 compresses
    level = result["png_level_chosen"]
    assert result["png"][str(level)]["bytes"] <= 1.25 * min(v["bytes"] for v in result["png"].values())
    for written in result["write_stage"].values():
        assert written["written"] == written["images"] == 4 and written["ms"] > 0
    assert all(v > 0 for v in result["stages_ms"].values())
    assert result["post_generation_cpu_ms"]["qc_on_gpu"] > result["stages_ms"]["pixel_checks_ms"]


def test_choose_level_takes_the_fastest_within_a_quarter_of_the_smallest_files():
    png = {"0": {"ms": 1, "bytes": 300}, "1": {"ms": 2, "bytes": 118}, "3": {"ms": 3, "bytes": 104},
           "6": {"ms": 9, "bytes": 100}, "9": {"ms": 30, "bytes": 99}}  # fmt: skip
    assert stage_costs.choose_level(png) == 1
    png["1"]["bytes"] = 130  # more than 25 % over level 9's 99 bytes
    assert stage_costs.choose_level(png) == 3


def test_the_gpu_check_refuses_without_cuda_and_names_the_smoke(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_check.main([]) == 2
    assert "--cpu-smoke" in capsys.readouterr().err


@pytest.mark.slow
def test_the_cpu_smoke_runs_every_step_of_the_gpu_check(tmp_path):
    out = tmp_path / "gpu-check.json"
    # In a fresh process, as it is run: the check sets the environment before the stack is imported.
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--cpu-smoke", "--budget-s", "600", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {name: step["status"] for name, step in result["steps"].items()} == {
        "build": "ok", "sd15": "ok", "actors": "ok", "fewstep": "ok", "stages": "ok", "option_channels_last": "ok",
    }  # fmt: skip
    summary = result["summary"]
    assert summary["pipeline_images_per_s"] > 0 and summary["bare_images_per_s"] > 0
    assert 0 < summary["pipeline_over_bare"] and 0 < summary["two_actors_over_one"]
    assert summary["failed"] == [] and summary["skipped"] == []
    assert result["steps"]["sd15"]["same_images"]  # the bare loop and the pipeline drew the same images


def test_a_step_that_fails_is_reported_and_the_check_goes_on(tmp_path):
    check = gpu_check.Check(tmp_path / "r.json", 60, {"benchmark": "gpu check"})
    check.step("broken", 0, lambda: 1 / 0)
    check.step("fine", 0, lambda: {"x": 1})
    check.step("late", 1e9, lambda: {"x": 2})
    steps = json.loads((tmp_path / "r.json").read_text())["steps"]
    assert steps["broken"]["status"] == "failed" and "ZeroDivisionError" in steps["broken"]["error"]
    assert steps["fine"] == {"status": "ok", "x": 1, "seconds": steps["fine"]["seconds"]}
    assert steps["late"]["status"] == "skipped"
