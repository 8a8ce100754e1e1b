"""Warnings for distilled models run with settings they were not made for: the folder's LCM scheduler,
a Turbo/Lightning name, an LCM-LoRA's file name."""

import shutil

import pytest

from diffgen.generation.distilled import distillation, distilled_warnings
from diffgen.schemas.job import JobSpec


def _spec(model, **sections) -> JobSpec:
    return JobSpec.model_validate({"model": {"id": str(model)}, **sections})


def test_an_lcm_folder_run_like_its_base_model_is_warned_about_steps_only(tiny_lcm):
    # Its UNet takes guidance as an embedding: 7.5 runs no unconditional pass, so only the steps are wrong.
    spec = _spec(tiny_lcm, sampler={"scheduler": "default"})
    (warning,) = distilled_warnings(spec, [25, 25, 4], [7.5, 7.5, 7.5])
    assert warning == (
        "model.id tiny-lcm: its scheduler is LCMScheduler (LCM-distilled), made for at most 8 steps; 2 image(s) at 25"
    )
    assert distilled_warnings(spec, [4], [7.5]) == []
    (switched,) = distilled_warnings(_spec(tiny_lcm, sampler={"scheduler": "euler"}), [4], [1.0])
    assert switched.endswith("made for the lcm scheduler; sampler.scheduler is euler")


def test_an_lcm_lora_with_classifier_free_guidance_is_warned(tiny_sd, tiny_lora, tmp_path):
    lora = shutil.copy(tiny_lora, tmp_path / "lcm-lora-sdv1-5.safetensors")
    spec = _spec(tiny_sd, sampler={"scheduler": "lcm"}, loras=[{"path": str(lora)}])
    (warning,) = distilled_warnings(spec, [4], [7.5])
    assert warning.startswith("loras.0 lcm-lora-sdv1-5.safetensors: the name says LCM-LoRA (LCM-distilled), made for ")
    assert "guidance_scale <= 2 (no unconditional pass); 1 image(s) at 7.5, which runs classifier-free" in warning
    assert distilled_warnings(spec, [4], [1.5]) == []


def test_a_turbo_model_needs_few_steps_no_guidance_and_trailing_timesteps(tiny_sd, tmp_path):
    turbo = shutil.copytree(tiny_sd, tmp_path / "sdxl-turbo")
    spec = _spec(turbo, sampler={"scheduler": "euler"})
    warnings = distilled_warnings(spec, [25], [7.5])
    assert [w.split("; ", 1)[0].rsplit(" made for ", 1)[1] for w in warnings] == [
        "at most 4 steps", "guidance_scale <= 1 (no unconditional pass)", "trailing timestep spacing",
    ]  # fmt: skip
    assert "spaces them 'linspace' (set sampler.scheduler_options.timestep_spacing: trailing)" in warnings[2]
    trailing = _spec(turbo, sampler={"scheduler": "euler", "scheduler_options": {"timestep_spacing": "trailing"}})
    assert distilled_warnings(trailing, [1, 4], [0.0, 1.0]) == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [("sd-turbo", "turbo"), ("SDXL-Lightning-4step", "lightning"), ("Hyper-SD15", "hyper"), ("dmd2_sdxl", "dmd2"),
     ("FLUX.1-schnell", "schnell"), ("turbocharged", None), ("blcm", None), ("stable-diffusion-v1-5", None)],
)  # fmt: skip
def test_names_mark_a_distillation_only_as_a_word(tiny_sd, tmp_path, name, kind):
    folder = shutil.copytree(tiny_sd, tmp_path / name)
    found = distillation(_spec(folder))
    assert (found.kind if found else None) == kind
