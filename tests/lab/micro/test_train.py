"""The micro family's training job at a few steps: every component lands in the folder layout diffgen
loads, the UNet's text encoder is trained along with it, and a second call resumes instead of
training again."""

import json

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPTextModel

from diffgen.generation.loading import load_pipeline_set, placement
from diffgen.schemas.job import ComputeSpec
from lab.micro.evaluate import EvalConfig, eval_job_spec, eval_scenes, generate_images
from lab.micro.train import COMPONENTS, TrainConfig, _blur, _component, train_all


def _tiny_config() -> TrainConfig:
    return TrainConfig(
        steps={name: 3 for name in COMPONENTS},
        batch={"clip": 8, "vae": 4, "unet": 4, "controlnet": 4, "judge": 8},
        latent_pool=32,
        probe_scenes=4,
    )


@pytest.mark.slow  # trains
def test_a_few_steps_of_training_give_a_family_diffgen_loads_and_samples(tmp_path):
    out, work = tmp_path / "models", tmp_path / "work"
    report = train_all(_tiny_config(), work, out)
    assert set(report) == set(COMPONENTS)
    assert all(r["steps"] == 3 and np.isfinite(r["final_loss"]) for r in report.values())
    assert report["unet"]["text_encoder_trained"] is True
    # What each component's training measured, beside its weights and as its done marker in the work folder.
    for folder in (out / "micro-clip", work / "vae-final", work / "unet-final", out / "micro-controlnet",
                   out / "micro-judge"):  # fmt: skip
        assert json.loads((folder / "training.json").read_text())["steps"] == 3
    for name in COMPONENTS:
        assert json.loads((work / name / "done.json").read_text()) == report[name]
    # The UNet and ControlNet end with the probe: a loss and wrong-word penalties per noise level.
    for name in ("unet", "controlnet"):
        assert set(report[name]["probe"]["penalty"]) == {"position", "shape", "circle_square", "color", "no_caption"}

    # The pipeline's text encoder started as the CLIP's text tower and moved with the UNet.
    tower = CLIPModel.from_pretrained(out / "micro-clip").text_model.state_dict()
    encoder = CLIPTextModel.from_pretrained(out / "micro-sd" / "text_encoder").state_dict()
    assert tower.keys() == encoder.keys()
    assert any(not torch.equal(tower[k], encoder[k]) for k in tower)
    assert json.loads((out / "micro-sd" / "model_index.json").read_text())["_trained_sizes"] == [[64, 64]]

    config = EvalConfig(steps=2, batch_size=2)
    pipes = load_pipeline_set(
        eval_job_spec(out / "micro-sd", config, out / "micro-controlnet"), placement(ComputeSpec(device="cpu"))
    )
    scenes = eval_scenes(2)
    images, _ = generate_images(pipes, [s.caption() for s in scenes], config, 5.0)
    assert [i.shape for i in images] == [(64, 64, 3)] * 2

    # Finished components are kept: a second call trains nothing and reports the same.
    weights = (out / "micro-sd" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert train_all(_tiny_config(), work, out) == report
    assert (out / "micro-sd" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights


def test_the_judges_blur_keeps_colour_mass_and_leaves_sigma_zero_alone():
    images = torch.zeros(2, 3, 16, 16)
    images[:, :, 8, 8] = 1.0
    blurred = _blur(images, np.array([0.0, 1.0]))
    assert torch.equal(blurred[0], images[0])
    assert blurred[1, 0].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert 0.1 < blurred[1, 0, 8, 8].item() < 0.2  # a unit Gaussian's centre weight is 0.159



def test_a_component_is_trained_again_in_a_fresh_work_folder_whatever_its_output_folder_holds(tmp_path):
    # A fresh clone's committed family carries training.json files beside its weights; only the work
    # folder's marker says a component is finished.
    folder = tmp_path / "models" / "micro-judge"
    folder.mkdir(parents=True)
    (folder / "training.json").write_text('{"steps": 600}')
    calls = []

    def train():
        calls.append(1)
        return torch.nn.Linear(1, 1), {"steps": 3}

    def save(model, where):
        torch.save(model.state_dict(), where / "weights.pt")

    first = _component("judge", folder, tmp_path / "work", ("judge",), train, save)
    again = _component("judge", folder, tmp_path / "work", ("judge",), train, save)
    assert len(calls) == 1 and first == again and first["steps"] == 3
    assert json.loads((folder / "training.json").read_text())["steps"] == 3
    assert _component("judge", folder, tmp_path / "other", ("clip",), train, save) is None
