"""Loading: checks that fail before any weights load, and compute options that degrade on the CPU."""

import json
import logging

import numpy as np
import pytest
import torch

from diffgen.generation.loading import ModelLoadError, load_pipeline, load_pipeline_set, placement, preflight
from diffgen.generation.sampling import Request, generate
from diffgen.schemas.job import ComputeSpec, JobSpec
from tests.conftest import REPO


def _spec(model, allow_pickle: bool = False, **extra) -> JobSpec:
    return JobSpec.model_validate({"model": {"id": str(model), "allow_pickle": allow_pickle}, **extra})


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


def test_scheduler_options_are_checked_in_the_preflight_against_the_chosen_class(tiny_sd, tiny_lcm):
    with pytest.raises(ModelLoadError, match=r"^sampler.scheduler_options.use_karras_sigmas: not an option of "
                                             r"LCMScheduler. Choose from: beta_end, "):  # fmt: skip
        preflight(_spec(tiny_sd, sampler={"scheduler": "lcm", "scheduler_options": {"use_karras_sigmas": True}}))
    # 'default' is the folder's own class: LCMScheduler here, which refuses more steps than it was distilled on.
    with pytest.raises(ModelLoadError, match=r"^sampler.scheduler_options: LCMScheduler refuses "
                                             r"original_inference_steps=10: .*num_inference_steps`: 20"):  # fmt: skip
        preflight(_spec(tiny_lcm, sampler={"scheduler_options": {"original_inference_steps": 10}}))
    preflight(_spec(tiny_sd, sampler={"scheduler": "euler", "scheduler_options": {"timestep_spacing": "trailing"}}))


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


# Pickle weights and custom code: neither runs unless the job says so, and custom code never.


@pytest.fixture(scope="module")
def pickled_sd(tiny_sd, tmp_path_factory):
    """The tiny SD pipeline re-saved with pickle weights only (diffusers' `safe_serialization=False`).

    transformers always writes safetensors, so the text encoder's weights are pickled by hand.
    """
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("models") / "tiny-sd-pickle"
    StableDiffusionPipeline.from_pretrained(tiny_sd).save_pretrained(out, safe_serialization=False)
    encoder = out / "text_encoder"
    torch.save(load_file(encoder / "model.safetensors"), encoder / "pytorch_model.bin")
    (encoder / "model.safetensors").unlink()
    assert not list(out.rglob("*.safetensors"))
    return out


def _booby_trapped_pickle(path, marker):
    """A pickle that creates `marker` when it is unpickled, as a hostile checkpoint would run code."""
    import pickle

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Trap()))


def test_pickle_only_weights_are_refused_naming_the_files_and_the_field(pickled_sd):
    names = "text_encoder/pytorch_model.bin, unet/diffusion_pytorch_model.bin, vae/diffusion_pytorch_model.bin"
    for refuse in (
        lambda: preflight(_spec(pickled_sd)),
        lambda: load_pipeline_set(_spec(pickled_sd), placement(ComputeSpec())),
    ):
        with pytest.raises(ModelLoadError) as err:
            refuse()
        message = str(err.value)
        assert message.startswith(f"model.id: {pickled_sd} has pickle weights with no safetensors beside them")
        assert f"({names})" in message and "set model.allow_pickle: true" in message


def test_allow_pickle_loads_pickle_weights_with_a_warning(pickled_sd, reference, caplog):
    spec = _spec(pickled_sd, allow_pickle=True)
    with caplog.at_level(logging.WARNING, logger="diffgen"):
        pipes = load_pipeline_set(spec, placement(spec.compute))
    assert "model.id: loading pickle weights text_encoder/pytorch_model.bin, unet/" in caplog.text
    assert "(model.allow_pickle is true)" in caplog.text
    (result,) = generate(pipes, [Request("a cat", "", 5, 3.0, 2, 32, 32)], 1)
    # The same weights as the safetensors original: the same image.
    assert np.abs(result.pixels.astype(int) - reference.astype(int)).max() <= 2


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_pickle_beside_safetensors_is_never_read(tiny_sd, tmp_path, allow_pickle):
    import shutil

    model = shutil.copytree(tiny_sd, tmp_path / "model")
    marker = tmp_path / "pickle-ran"
    _booby_trapped_pickle(model / "unet" / "diffusion_pytorch_model.bin", marker)
    spec = _spec(model, allow_pickle)
    pipes = load_pipeline_set(spec, placement(spec.compute))
    assert pipes.base.unet is not None
    assert not marker.exists()


def test_a_pickle_only_controlnet_needs_its_own_switch(tiny_sd, tiny_controlnet, tmp_path):
    from diffusers import ControlNetModel

    pickled = tmp_path / "controlnet"
    ControlNetModel.from_pretrained(tiny_controlnet).save_pretrained(pickled, safe_serialization=False)
    controlnet = {"name": "edges", "model": {"id": str(pickled)}}
    with pytest.raises(
        ModelLoadError,
        match=r"^controlnets.0.model.id: .* \(diffusion_pytorch_model.bin\); .* set controlnets.0.model.allow_pickle",
    ):
        preflight(_spec(tiny_sd, allow_pickle=True, controlnets=[controlnet]))
    controlnet["model"]["allow_pickle"] = True
    assert preflight(_spec(tiny_sd, controlnets=[controlnet])).name == "sd"


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_custom_code_in_a_model_folder_never_runs(tiny_sd, tmp_path, allow_pickle):
    """diffusers imports a component's own .py file only with `trust_remote_code=True`, which diffgen never passes."""
    import shutil

    model = shutil.copytree(tiny_sd, tmp_path / "model")
    marker = tmp_path / "custom-code-ran"
    (model / "unet" / "evil_unet.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from diffusers import UNet2DConditionModel\n\nclass EvilUNet(UNet2DConditionModel):\n    pass\n"
    )
    index = json.loads((model / "model_index.json").read_text())
    index["unet"] = ["evil_unet", "EvilUNet"]
    (model / "model_index.json").write_text(json.dumps(index))
    spec = _spec(model, allow_pickle)
    with pytest.raises(ModelLoadError, match=r"declares component 'unet' as \['evil_unet', 'EvilUNet'\], custom code"):
        preflight(spec)
    # Past the pre-flight, diffusers itself must refuse: what it does with the arguments diffgen passes.
    with pytest.raises(ModelLoadError, match="contains custom code"):
        load_pipeline(spec.model, placement(spec.compute))
    assert not marker.exists()


# Folders that used to fail only when an actor loaded them: the pre-flight reads every weights file's
# header and resolves every class the pipeline instantiates, and names the field and the file.


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _truncate(path, nbytes: int = 100):
    path.write_bytes(path.read_bytes()[:-nbytes])


def _decoy_beside_pickle(model):
    """The UNet's weights pickled, beside an empty `.safetensors` of another name that diffusers never loads."""
    from safetensors.torch import load_file

    unet = model / "unet"
    torch.save(load_file(unet / "diffusion_pytorch_model.safetensors"), unet / "diffusion_pytorch_model.bin")
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "weights.safetensors").write_bytes(b"")


BAD_FOLDERS = {
    "truncated weights": (
        lambda m: _truncate(m / "unet" / "diffusion_pytorch_model.safetensors"),
        r"/unet/diffusion_pytorch_model.safetensors is truncated: its header describes \d+ bytes of tensor data",
    ),
    "garbage in a .safetensors": (
        lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(bytes(range(256)) * 16),
        r"/vae/diffusion_pytorch_model.safetensors is not a whole safetensors file",
    ),
    "an empty .safetensors": (
        lambda m: (m / "text_encoder" / "model.safetensors").write_bytes(b""),
        r"/text_encoder/model.safetensors is 0 bytes, too short to be a safetensors file",
    ),
    "a decoy .safetensors beside pickle weights": (
        _decoy_beside_pickle,
        r"/unet has none of the weights files diffusers loads .*; its safetensors files are weights.safetensors$",
    ),
    "a list-valued _class_name": (
        lambda m: _edit_json(m / "model_index.json", _class_name=["my_pipeline", "MyPipeline"]),
        r": Unknown pipeline class \['my_pipeline', 'MyPipeline'\] \(not a class name\) in model_index.json",
    ),
    "an unknown component class": (
        lambda m: _edit_json(m / "model_index.json", unet=["diffusers", "NoSuchUNet"]),
        r"/model_index.json declares component 'unet' as \['diffusers', 'NoSuchUNet'\], "
        r"but diffusers has no class 'NoSuchUNet'$",
    ),
    "an unknown tokenizer class": (
        lambda m: _edit_json(m / "model_index.json", tokenizer=["transformers", "NoSuchTokenizer"]),
        r"declares component 'tokenizer' .*, but transformers has no class 'NoSuchTokenizer'$",
    ),
    "a component that is not a [library, class] pair": (
        lambda m: _edit_json(m / "model_index.json", unet="UNet2DConditionModel"),
        r"declares component 'unet' as 'UNet2DConditionModel'; a component is a \[library, class\] pair",
    ),
    "a required component left out": (
        lambda m: _edit_json(m / "model_index.json", unet=[None, None]),
        r"/model_index.json has no unet, which a sd model needs$",
    ),
    "a component config's _class_name that is not a name": (
        lambda m: _edit_json(m / "unet" / "config.json", _class_name=None),
        r"/unet/config.json's _class_name is None, not a class name$",
    ),
}


@pytest.mark.parametrize("damage", BAD_FOLDERS, ids=list(BAD_FOLDERS))
def test_a_folder_that_would_fail_to_load_fails_the_preflight_naming_the_file(tiny_sd, tmp_path, damage):
    import re
    import shutil

    model = shutil.copytree(tiny_sd, tmp_path / "model")
    make, message = BAD_FOLDERS[damage]
    make(model)
    spec = _spec(model)
    # The same refusal on the driver (`diffgen validate`) and in a generation actor before it loads.
    for refuse in (lambda: preflight(spec), lambda: load_pipeline_set(spec, placement(spec.compute))):
        with pytest.raises(ModelLoadError) as err:
            refuse()
        assert str(err.value).startswith(f"model.id: {model}"), str(err.value)
        assert re.search(message, str(err.value)), str(err.value)


def test_what_diffusers_loads_anyway_passes_the_preflight(tiny_sd, tmp_path):
    """Only what surely fails is refused: diffusers loads these, so diffgen does too."""
    import shutil

    model = shutil.copytree(tiny_sd, tmp_path / "model")
    _edit_json(model / "unet" / "config.json", _class_name=["any", "list"])  # read as a custom pipeline's, ignored
    _edit_json(model / "text_encoder" / "config.json", architectures=["SomethingElse"])  # transformers ignores it
    (model / "unet" / "notes.safetensors").write_bytes(b"")  # a file diffusers never opens
    _edit_json(model / "model_index.json", extra=["diffusers", "NoSuchClass"])  # not a StableDiffusionPipeline argument
    spec = _spec(model)
    assert preflight(spec).name == "sd"
    assert load_pipeline_set(spec, placement(spec.compute)).base.unet is not None


def test_a_controlnet_with_corrupt_weights_or_class_is_refused_naming_its_field(tiny_sd, tiny_controlnet, tmp_path):
    import shutil

    controlnet = shutil.copytree(tiny_controlnet, tmp_path / "controlnet")
    spec = _spec(tiny_sd, controlnets=[{"name": "edges", "model": {"id": str(controlnet)}}])
    assert preflight(spec).name == "sd"
    _truncate(controlnet / "diffusion_pytorch_model.safetensors", 1)
    with pytest.raises(ModelLoadError) as err:
        preflight(spec)
    assert str(err.value).startswith(
        f"controlnets.0.model.id: {controlnet}/diffusion_pytorch_model.safetensors is truncated: its header describes"
    )
    _edit_json(controlnet / "config.json", _class_name=["controlnet", "ControlNetModel"])
    with pytest.raises(
        ModelLoadError, match=r"^controlnets.0.model.id: .*/config.json's _class_name is \['controlnet', 'Control"
    ):
        preflight(spec)


def test_allowed_pickle_weights_are_checked_by_their_bytes(pickled_sd, tmp_path):
    import shutil

    model = shutil.copytree(pickled_sd, tmp_path / "model")
    spec = _spec(model, allow_pickle=True)
    assert preflight(spec).name == "sd"
    _truncate(model / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=rf"^model.id: {model}/vae/diffusion_pytorch_model.bin is a truncated"):
        preflight(spec)
    (model / "vae" / "diffusion_pytorch_model.bin").write_text("not weights")
    with pytest.raises(ModelLoadError, match=r"/vae/diffusion_pytorch_model.bin is neither a PyTorch zip checkpoint"):
        preflight(spec)


def test_a_scheduler_known_to_draw_garbage_on_this_model_is_refused_in_the_preflight():
    from lab.micro.evaluate import EvalConfig, eval_job_spec

    micro = REPO / "models" / "micro-sd"
    for name in ("dpmpp_2m_karras", "pndm"):
        with pytest.raises(ModelLoadError, match=rf"^sampler.scheduler: '{name}' is refused"):
            preflight(eval_job_spec(micro, EvalConfig(scheduler=name)))
    preflight(eval_job_spec(micro, EvalConfig(scheduler="ddim")))
