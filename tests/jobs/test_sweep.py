"""`diffgen sweep` end to end on the tiny model: every point run and scored in one Ray session, sweep.json and
sweep.html written, a second call resumes every point; a bad grid or job is refused with exit 2 before Ray."""

import json

import numpy as np

from diffgen.dataset import storage
from diffgen.jobs.api import EXIT_INVALID, EXIT_OK
from diffgen.jobs.cli import main
from diffgen.provenance.png import encode_png
from diffgen.schemas.sweep import SweepReport
from diffgen.schemas.utility import UtilityReport
from tests.conftest import write_job, write_manifest


def _pngs(root, counts: dict[str, int], seed: int) -> str:
    rng = np.random.default_rng(seed)
    for label, n in counts.items():
        for i in range(n):
            storage.write_bytes(str(root / label / f"{i}.png" if label else root / f"{i}.png"),
                                encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))  # fmt: skip
    return str(root)


def _job(tmp_path, tiny_sd, tiny_clip):
    rows = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 2, "label": "ab"[i % 2]} for i in range(4)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    qc = {"clip_model": str(tiny_clip), "fid_backbone": "clip", "reference": _pngs(tmp_path / "ref", {"": 8}, 1),
          "utility": {"real": _pngs(tmp_path / "real", {"a": 4, "b": 4}, 2), "few_shot": 1, "resamples": 100}}
    return write_job(tmp_path / "job.yaml", tiny_sd, qc=qc, manifest=str(manifest))


def test_a_sweep_runs_and_scores_every_point_and_resumes(ray_cluster, tmp_path, tiny_sd, tiny_clip, capsys):
    job, out = _job(tmp_path, tiny_sd, tiny_clip), tmp_path / "sweep"
    argv = ["sweep", str(job), "--grid", "sampler.guidance_scale=1.5,4", "--grid", "sampler.steps=2",
            "--output", str(out)]  # fmt: skip
    assert main(argv) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    report = SweepReport.model_validate_json((out / "sweep.json").read_text())
    names = ["guidance_scale-1.5_steps-2", "guidance_scale-4_steps-2"]
    assert [p.name for p in report.points] == names and sorted(printed["points"]) == names
    for point in report.points:
        run = json.loads((out / "points" / point.name / "run.json").read_text())
        assert run["job"]["sampler"]["guidance_scale"] == point.settings["sampler.guidance_scale"]
        assert run["job"]["sampler"]["steps"] == point.settings["sampler.steps"] and not point.resumed
        assert (out / "points" / point.name / "qc" / "utility.json").exists()
        for metric in ("clip_score", "fid", "kid", "cmmd", "precision", "utility_ratio", "images_per_second"):
            assert point.metrics[metric] is not None, (point.name, metric)
    assert printed["best"]["fid"] in names and "<svg" in (out / "sweep.html").read_text()

    # Run again: nothing is generated, every point's scores are read back.
    assert main(argv) == EXIT_OK
    again = SweepReport.model_validate_json((out / "sweep.json").read_text())
    assert all(p.resumed for p in again.points)
    assert [p.metrics for p in again.points] == [p.metrics for p in report.points]

    # `diffgen utility` on a point's output with other settings: a standalone score, same probes.
    point = out / "points" / names[0]
    capsys.readouterr()
    assert main(["utility", str(point), "--set", "qc.utility.resamples=200"]) == EXIT_OK
    assert UtilityReport.model_validate_json((point / "qc" / "utility.json").read_text()).resamples == 200


def test_bad_grids_and_jobs_exit_2_before_any_run(tmp_path, tiny_sd, tiny_clip, caplog):
    job, out = str(_job(tmp_path, tiny_sd, tiny_clip)), str(tmp_path / "sweep")
    cases = [
        (["--grid", "sampler.steps=0,2"], "sampler.steps"),
        (["--grid", "sampler.stepz=2,3"], "sampler.stepz"),
        (["--grid", "output=a,b"], "a sweep sets each point's output itself"),
        (["--grid", "sampler.steps=2,2"], "a value is repeated"),
        (["--grid", "sampler.steps=2", "--set", "qc.utility.few_shot=0"], "qc.utility.few_shot"),
    ]
    for args, message in cases:
        caplog.clear()
        assert main(["sweep", job, *args, "--output", out]) == EXIT_INVALID, args
        assert message in caplog.text, (args, caplog.text[-500:])
    assert not (tmp_path / "sweep").exists()
