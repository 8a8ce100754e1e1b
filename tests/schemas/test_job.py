from pathlib import Path

import pytest

from schemas.job import SCHEDULER_NAMES, JobSpec, JobSpecError, load_job_spec


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_job_file(tmp_path: Path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    spec = load_job_spec(_write(tmp_path, "model: {id: models/m}\nmanifest: m.parquet\noutput: out\n"))
    assert spec.model.id == str(tmp_path / "models" / "m")
    assert spec.manifest == str(tmp_path / "m.parquet")
    assert spec.output == str(tmp_path / "out")
    assert spec.run_id == "job"


def test_hub_ids_and_remote_uris_are_left_alone(tmp_path: Path):
    spec = load_job_spec(
        _write(tmp_path, "model: {id: org/model, revision: abc}\nmanifest: s3://b/m.parquet\noutput: s3://b/o\n")
    )
    assert (spec.model.id, spec.model.revision) == ("org/model", "abc")
    assert (spec.manifest, spec.output) == ("s3://b/m.parquet", "s3://b/o")


def test_overrides_are_typed_and_cli_uris_win(tmp_path: Path):
    spec = load_job_spec(
        _write(tmp_path, "model: {id: org/model}\noutput: s3://b/o\n"),
        overrides=["sampler.steps=12", "sampler.guidance_scale=1.5", "compute.dtype=bf16"],
        output="s3://other/o",
    )
    assert spec.sampler.steps == 12 and spec.sampler.guidance_scale == 1.5
    assert spec.compute.dtype == "bf16"
    assert spec.output == "s3://other/o"


def test_every_problem_is_reported_at_once_naming_its_field(tmp_path: Path):
    path = _write(tmp_path, "model: {id: m}\nsampler: {steps: 0, schedular: euler}\ncompute: {batch_size: -1}\n")
    with pytest.raises(JobSpecError) as err:
        load_job_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert "sampler.steps" in message
    assert "sampler.schedular" in message and "Extra inputs are not permitted" in message
    assert "compute.batch_size" in message


def test_unknown_scheduler_lists_the_choices(tmp_path: Path):
    with pytest.raises(JobSpecError) as err:
        load_job_spec(_write(tmp_path, "model: {id: m}\nsampler: {scheduler: heun}\n"))
    for name in SCHEDULER_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("bad", ["=1", "noequals", "model.id.x=1"])
def test_malformed_override(tmp_path: Path, bad: str):
    with pytest.raises(JobSpecError, match="KEY=VALUE|not a section"):
        load_job_spec(_write(tmp_path, "model: {id: m}\n"), overrides=[bad])


def test_io_is_required_to_run():
    with pytest.raises(JobSpecError, match="manifest, output"):
        JobSpec.model_validate({"model": {"id": "m"}}).require_io()


def test_run_id_must_be_a_safe_name(tmp_path: Path):
    with pytest.raises(JobSpecError, match="run_id"):
        load_job_spec(_write(tmp_path, "run_id: ../escape\nmodel: {id: m}\n"))


def test_cuda_device_needs_gpus(tmp_path: Path):
    with pytest.raises(JobSpecError, match="gpus_per_actor"):
        load_job_spec(_write(tmp_path, "model: {id: m}\ncompute: {device: cuda}\n"))
