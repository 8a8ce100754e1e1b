"""Loading: checks that fail before any weights load, and compute options that degrade on the CPU."""

import json
import logging

import numpy as np
import pytest
import torch

from diffgen.loading import ModelLoadError, load_pipeline_set, placement, preflight
from diffgen.sampling import Request, generate
from schemas.job import ComputeSpec, JobSpec


def _spec(model, **extra) -> JobSpec:
    return JobSpec.model_validate({"model": {"id": str(model)}, **extra})


def test_an_unknown_family_fails_before_loading_listing_the_choices(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ModelLoadError) as err:
        preflight(_spec(tmp_path))
    assert (
        "Unknown pipeline class 'KandinskyV22Pipeline' in model_index.json. Choose from: StableDiffusionPipeline"
        in str(err.value)
    )


def test_a_scheduler_the_model_cannot_use_fails_listing_what_it_can(tiny_family):
    flux, _ = tiny_family("flux")
    with pytest.raises(ModelLoadError, match=r"sampler.scheduler: 'euler' .* Choose from: default$"):
        preflight(_spec(flux, sampler={"scheduler": "euler"}))
    assert preflight(_spec(flux)).name == "flux"


def test_a_controlnet_of_another_family_is_refused_naming_the_field(tiny_sd, tiny_family):
    _, flux_controlnet = tiny_family("flux")
    spec = _spec(tiny_sd, controlnets=[{"name": "edges", "model": {"id": str(flux_controlnet)}}])
    with pytest.raises(
        ModelLoadError, match=r"controlnets.0.model.id: .* holds a 'FluxControlNetModel', but a sd model"
    ):
        preflight(spec)
    missing = _spec(tiny_sd, controlnets=[{"name": "edges", "model": {"id": "/nowhere/controlnet"}}])
    with pytest.raises(ModelLoadError, match="controlnets.0.model.id: folder /nowhere/controlnet does not exist"):
        preflight(missing)


def test_a_missing_lora_file_is_named(tiny_sd, tmp_path):
    with pytest.raises(ModelLoadError, match=r"loras.0.path: .*absent.safetensors is not a file"):
        preflight(_spec(tiny_sd, loras=[{"path": str(tmp_path / "absent.safetensors")}]))


@pytest.fixture(scope="module")
def reference(tiny_sd):
    pipes = load_pipeline_set(_spec(tiny_sd), placement(ComputeSpec()))
    return generate(pipes, [Request("a cat", "", 5, 3.0, 2, 32, 32)], 1)[0].pixels


@pytest.mark.parametrize(
    "option, logged",
    [
        ({"channels_last": True}, None),
        ({"vae_slicing": True}, None),
        ({"vae_tiling": True}, None),
        ({"torch_compile": True}, "compute.torch_compile: skipped on the CPU"),
        ({"cpu_offload": True}, "compute.cpu_offload: nothing to offload to on the CPU"),
        ({"dtype": "fp16"}, "fp16 is not supported for CPU inference"),
        ({"gpus_per_actor": 0.5}, "CUDA requested but not available"),
    ],
)
def test_each_compute_option_loads_and_generates_on_the_cpu(tiny_sd, reference, caplog, option, logged):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallbacks")
    spec = _spec(tiny_sd, compute=option)
    with caplog.at_level(logging.WARNING, logger="diffgen"):
        pipes = load_pipeline_set(spec, placement(spec.compute))
        (result,) = generate(pipes, [Request("a cat", "", 5, 3.0, 2, 32, 32)], 1)
    assert result.error is None and result.pixels.shape == (32, 32, 3)
    if logged:
        assert logged in caplog.text
    # None of these may change the image on the CPU (tiling only splits images above its tile size).
    assert np.abs(result.pixels.astype(int) - reference.astype(int)).max() <= 2
    if option.get("channels_last"):
        assert pipes.base.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    if option.get("vae_slicing"):
        assert pipes.base.vae.use_slicing


def test_bf16_runs_on_the_cpu(tiny_sd):
    spec = _spec(tiny_sd, compute={"dtype": "bf16"})
    pipes = load_pipeline_set(spec, placement(spec.compute))
    assert pipes.base.unet.dtype == torch.bfloat16
    (result,) = generate(pipes, [Request("a cat", "", 5, 3.0, 2, 32, 32)], 1)
    assert result.error is None and result.pixels.shape == (32, 32, 3)
