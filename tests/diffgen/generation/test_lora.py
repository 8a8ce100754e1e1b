"""LoRA adapters made with peft on the tiny UNet, saved with diffusers, loaded from a job spec."""

import numpy as np
import pytest
from PIL import Image

from diffgen.generation.loading import ModelLoadError, load_pipeline_set, placement, preflight
from diffgen.generation.sampling import Request, generate
from diffgen.schemas.job import JobSpec
from lab.builders.tiny import build_tiny_lora

pytest.importorskip("peft")

TOL = 2


@pytest.fixture(scope="module")
def loras(tiny_sd, tiny_lora, tmp_path_factory):
    return tiny_lora, build_tiny_lora(tiny_sd, tmp_path_factory.mktemp("loras") / "other.safetensors", seed=3)


def _images(tiny_sd, tiny_controlnet, loras: list[dict]) -> list[np.ndarray]:
    spec = JobSpec.model_validate(
        {
            "model": {"id": str(tiny_sd)},
            "loras": loras,
            "controlnets": [{"name": "edges", "model": {"id": str(tiny_controlnet)}, "required": False}],
        }
    )
    pipes = load_pipeline_set(spec, placement(spec.compute))
    control = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    requests = [
        Request("a cat", "", 4, 3.0, 2, 32, 32),
        Request("a cat", "", 4, 3.0, 2, 32, 32, control_images=(control,)),
    ]
    return [r.pixels.astype(int) for r in generate(pipes, requests, 2)]


def test_a_lora_changes_the_image_and_weight_0_does_not(tiny_sd, tiny_controlnet, loras):
    style, other = loras
    plain = _images(tiny_sd, tiny_controlnet, [])
    zero = _images(tiny_sd, tiny_controlnet, [{"path": str(style), "weight": 0.0}])
    full = _images(tiny_sd, tiny_controlnet, [{"path": str(style), "weight": 1.0}])
    both = _images(tiny_sd, tiny_controlnet, [{"path": str(style)}, {"path": str(other), "weight": 0.5}])
    for i in range(2):  # text-to-image, and the ControlNet variant that shares the adapted UNet
        assert np.abs(plain[i] - zero[i]).max() <= TOL
        assert np.abs(plain[i] - full[i]).max() > TOL
        assert np.abs(full[i] - both[i]).max() > TOL


def test_a_lora_that_is_not_whole_safetensors_fails_the_preflight_naming_its_field(tiny_sd, loras, tmp_path):
    """A pickle renamed .safetensors, or a truncated file, is refused before any actor starts."""
    import torch
    from safetensors.torch import load_file

    style, _ = loras
    pickled = tmp_path / "pickled.safetensors"
    torch.save(load_file(style), pickled)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(style.read_bytes()[:-8])
    for bad, message in (
        (pickled, "is not a whole safetensors file: .*looks like a PyTorch zip checkpoint written by torch.save"),
        (truncated, "is truncated: its header describes"),
    ):
        loras_of_job = [{"path": str(style)}, {"path": str(bad)}]
        spec = JobSpec.model_validate({"model": {"id": str(tiny_sd)}, "loras": loras_of_job})
        for refuse in (lambda: preflight(spec), lambda: load_pipeline_set(spec, placement(spec.compute))):
            with pytest.raises(ModelLoadError, match=f"^loras.1.path: {bad} {message}"):
                refuse()
