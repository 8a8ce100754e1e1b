"""Throughput estimates: table lookup, step scaling, per-record kinds, and a real calibration run."""

import json

import pyarrow as pa
import pytest
import torch

from diffgen.dataset.records import expand
from diffgen.generation import throughput
from diffgen.generation.throughput import Key, Measurement
from diffgen.schemas.job import JobSpec


@pytest.fixture
def sd_folder(tmp_path):
    """A model folder as far as the estimate reads it: the family comes from model_index.json."""
    folder = tmp_path / "sd15"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def _spec(model, **sections) -> JobSpec:
    data = {"model": {"id": str(model)}, "sampler": {"steps": 20, "guidance_scale": 7.5, "width": 512, "height": 512}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return JobSpec.model_validate({**data, "manifest": "/m.parquet", "output": "/out"})


def _measurement(steps=20, seconds=2.0, load=10.0, **key) -> Measurement:
    fields = {"model": "sd15", "family": "sd", "device": "cpu", "width": 512, "height": 512, "cfg": True}
    return Measurement(Key(**{**fields, **key, "steps": steps}), seconds, load, 4, "test machine", "2026-11-22")


def test_lookup_takes_the_nearest_steps_and_scales_linearly():
    table = [_measurement(steps=10, seconds=1.0), _measurement(steps=50, seconds=4.0)]
    key = _measurement(steps=20).key
    measurement, seconds = throughput.lookup(table, key)
    assert measurement.key.steps == 10 and seconds == pytest.approx(2.0)
    assert throughput.lookup(table, _measurement(steps=50).key)[1] == 4.0
    for other in ({"width": 768}, {"device": "cuda"}, {"cfg": False}, {"model": "sdxl"}, {"controlnets": 1}):
        assert throughput.lookup(table, _measurement(**other).key) is None


def test_records_count_the_steps_and_guidance_they_run(sd_folder):
    spec = _spec(sd_folder)
    manifest = pa.Table.from_pylist(
        [
            {"id": "t2i", "prompt": "p", "num_images": 2, "guidance_scale": None, "init_image": None, "strength": None},
            {"id": "no-cfg", "prompt": "p", "num_images": 1, "guidance_scale": 1.0, "init_image": None, "strength": None},
            {"id": "i2i", "prompt": "p", "num_images": 1, "guidance_scale": None, "init_image": "/a.png", "strength": 0.5},
        ]
    )  # fmt: skip
    keys = throughput.record_keys(spec, expand(manifest, spec))
    assert [(k.steps, k.cfg) for k in keys] == [(20, True), (20, True), (20, False), (10, True)]
    assert keys[0] == Key("sd15", "sd", "cpu", 512, 512, 20, True, 0)
    assert (
        throughput.record_keys(_spec(sd_folder, compute={"gpus_per_actor": 1}), expand(manifest, spec))[0].device
        == "cuda"
    )


def test_estimate_sums_actor_seconds_and_divides_by_actors(sd_folder):
    spec = _spec(sd_folder, compute={"num_actors": 2, "gpus_per_actor": 0.5, "device": "cuda"})
    records = expand(pa.Table.from_pylist([{"id": "a", "prompt": "p", "num_images": 10}]), spec)
    result = throughput.estimate(spec, records, [_measurement(steps=10, seconds=1.5, load=6.0, device="cuda")])
    assert result["available"] and result["images_estimated"] == 10 and result["images_without_estimate"] == 0
    assert result["actor_seconds"] == pytest.approx(30.0)  # 10 images x 1.5 s x 20/10 steps
    assert result["gpu_seconds"] == pytest.approx(15.0) and result["wall_time_s"] == pytest.approx(6.0 + 15.0)
    assert result["basis"][0]["machine"] == "test machine" and "from measurements on test machine" in result["message"]


def test_without_a_measurement_it_says_so_and_what_to_do(sd_folder):
    spec = _spec(sd_folder)
    rows = [{"id": "a", "prompt": "p", "width": None}, {"id": "b", "prompt": "p", "width": 256}]
    records = expand(pa.Table.from_pylist(rows), spec)
    nothing = throughput.estimate(spec, records, [])
    assert not nothing["available"]
    assert nothing["message"] == (
        "no estimate: no throughput measured for model=sd15 family=sd device=cpu size=512x512 steps=20 cfg=on "
        "controlnets=0; run with --calibrate"
    )
    part = throughput.estimate(spec, records, [_measurement()])
    assert part["images_estimated"] == 1 and part["images_without_estimate"] == 1
    assert (
        "1 image(s) not counted: no throughput measured for model=sd15 family=sd device=cpu size=256x512"
        in part["message"]
    )


def test_the_shipped_table_parses_and_names_its_machines():
    table = throughput.load_table()
    assert table, "diffgen/throughput.yaml has no measurements"
    for m in table:
        assert m.seconds_per_image > 0 and m.load_seconds >= 0 and m.machine and m.measured
        assert Measurement.from_dict(m.to_dict()) == m
    assert len({m.key for m in table}) == len(table), "a kind of image measured twice"


def test_calibration_times_real_batches_of_the_job(tiny_sd):
    spec = JobSpec.model_validate(
        {
            "model": {"id": str(tiny_sd)},
            "sampler": {"steps": 2, "guidance_scale": 3.0, "width": 32, "height": 32},
            "compute": {"batch_size": 2},
            "manifest": "/m.parquet",
            "output": "/out",
        }
    )
    rows = [{"id": "a", "prompt": "p", "steps": None}, {"id": "b", "prompt": "q", "steps": 3}]
    records = expand(pa.Table.from_pylist(rows), spec)
    measured = throughput.calibrate(spec, records, batches=1)
    assert measured.key == Key("tiny-sd", "sd", "cpu", 32, 32, 2, True, 0)  # the commonest kind (a tie: first)
    assert measured.seconds_per_image > 0 and measured.load_seconds > 0 and measured.batch_size == 2
    assert "threads" in measured.machine and torch.__version__ in measured.machine
    estimated = throughput.estimate(spec, records, [measured])
    assert estimated["images_estimated"] == 2  # 3 steps scaled from the 2 measured


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_calibrating_a_gpu_job_on_a_cpu_machine_is_refused(sd_folder):
    spec = _spec(sd_folder, compute={"gpus_per_actor": 1})
    with pytest.raises(throughput.CalibrationError, match="CUDA"):
        throughput.calibrate(spec, expand(pa.Table.from_pylist([{"id": "a", "prompt": "p"}]), spec))


def test_the_example_job_has_an_estimate_from_the_shipped_table():
    from diffgen.schemas.job import load_job_spec
    from tests.conftest import REPO

    spec = load_job_spec(REPO / "examples" / "default" / "job.yaml")
    records = expand(pa.Table.from_pylist([{"id": "a", "prompt": "a red circle", "num_images": 4}]), spec)
    result = throughput.estimate(spec, records, throughput.load_table())
    assert result["available"] and result["images_estimated"] == 4 and result["images_without_estimate"] == 0
    assert result["basis"][0]["key"].startswith("model=micro-sd family=sd device=cpu size=64x64 steps=20 cfg=on")
