from pathlib import Path

import pytest

from diffgen.schemas.job import PREPROCESSOR_NAMES, SCHEDULER_NAMES, JobSpec, JobSpecError, load_job_spec


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


def test_qc_paths_resolve_against_the_job_file_and_uris_stay(tmp_path: Path):
    text = "model: {id: org/m}\nqc: {enabled: true, clip_model: models/clip, reference: s3://b/ref}\n"
    spec = load_job_spec(_write(tmp_path, text))
    assert spec.qc.clip_model == str(tmp_path / "models" / "clip")
    assert spec.qc.reference == "s3://b/ref"
    spec = load_job_spec(_write(tmp_path, "model: {id: org/m}\nqc: {enabled: true, reference_stats: ref.npz}\n"))
    assert spec.qc.reference_stats == str(tmp_path / "ref.npz")
    c2pa = "provenance: {c2pa: {cert_chain: certs/chain.pem, private_key: s3://b/key.pem}}"
    spec = load_job_spec(_write(tmp_path, f"model: {{id: org/m}}\n{c2pa}\n"))
    assert spec.provenance.c2pa.cert_chain == str(tmp_path / "certs" / "chain.pem")
    assert spec.provenance.c2pa.private_key == "s3://b/key.pem"


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


def test_controlnets_loras_and_guidance_fields_validate_and_resolve_paths(tmp_path: Path):
    (tmp_path / "cn").mkdir()
    spec = load_job_spec(
        _write(
            tmp_path,
            "model: {id: org/model}\n"
            "sampler: {guidance_rescale: 0.7, strength: 0.6}\n"
            "controlnets:\n"
            "  - {name: edges, model: {id: cn}, preprocessor: canny, canny_low: 50, canny_high: 150}\n"
            "  - {name: depth, model: {id: org/depth}, conditioning_scale: 0.5, required: false}\n"
            "loras: [{path: loras/style.safetensors, weight: 0.8}]\n"
            "compute: {channels_last: true, vae_slicing: true, cpu_offload: true}\n",
        )
    )
    assert spec.sampler.guidance_rescale == 0.7 and spec.sampler.strength == 0.6
    assert spec.controlnets[0].model.id == str(tmp_path / "cn")
    assert spec.controlnets[1].model.id == "org/depth"
    assert spec.control_columns() == {"edges": "control_image_edges", "depth": "control_image_depth"}
    assert spec.loras[0].path == str(tmp_path / "loras" / "style.safetensors")
    assert spec.loras[0].adapter_name == "style"
    assert spec.compute.channels_last and spec.compute.vae_slicing and spec.compute.cpu_offload


def test_one_controlnet_reads_the_plain_control_image_column():
    spec = JobSpec.model_validate({"model": {"id": "m"}, "controlnets": [{"name": "edges", "model": {"id": "c"}}]})
    assert spec.control_columns() == {"edges": "control_image"}


def test_unknown_preprocessor_lists_the_choices(tmp_path: Path):
    with pytest.raises(JobSpecError) as err:
        load_job_spec(_write(tmp_path, "model: {id: m}\ncontrolnets: [{name: a, model: {id: c}, preprocessor: hed}]\n"))
    assert "controlnets.0.preprocessor" in str(err.value)
    for name in PREPROCESSOR_NAMES:
        assert f"'{name}'" in str(err.value)


def test_controlnet_and_lora_mistakes_name_their_fields(tmp_path: Path):
    path = _write(
        tmp_path,
        "model: {id: m}\nsampler: {guidance_rescale: 1.5, strength: 0}\n"
        "controlnets:\n"
        "  - {name: a, model: {id: c}, guidance_start: 0.8, guidance_end: 0.2}\n"
        "  - {name: a, model: {id: c}, canny_low: 200, canny_high: 100}\n"
        "loras: [{path: style.ckpt}]\n",
    )
    with pytest.raises(JobSpecError) as err:
        load_job_spec(path)
    message = str(err.value)
    assert "sampler.guidance_rescale" in message and "sampler.strength" in message
    assert "controlnets.0: Value error, guidance_start (0.8) must be below guidance_end (0.2)" in message
    assert "controlnets.1: Value error, canny_low (200) must not exceed canny_high (100)" in message
    assert "loras.0.path: Value error, expected a .safetensors file" in message


def test_duplicate_controlnet_names_are_refused(tmp_path: Path):
    path = _write(tmp_path, "model: {id: m}\ncontrolnets: [{name: a, model: {id: c}}, {name: a, model: {id: d}}]\n")
    with pytest.raises(JobSpecError, match="controlnets: duplicate name"):
        load_job_spec(path)
