"""The probe measures losses per noise level and wrong-word penalties with one word changed at a time."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from lab.micro.models import micro_tokenizer, new_clip, new_unet, new_vae, scheduler, text_encoder_from_clip
from lab.micro.probe import LEVELS, probe, probe_set, wrong_captions
from lab.micro.world import parse_caption, sample_scene


def test_each_wrong_caption_changes_exactly_its_attribute():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(40)]
    variants = wrong_captions(scenes)
    for i, scene in enumerate(scenes):
        right = parse_caption(variants["right"][i])
        for name in ("position", "shape", "color"):
            wrong = parse_caption(variants[name][i])
            assert {k for k in right if right[k] != wrong[k]} == {name}
        swapped = variants["circle_square"][i]
        assert (swapped is None) == (scene.shape not in ("circle", "square"))
    assert set(variants["no_caption"]) == {""}


@pytest.mark.slow  # runs a UNet 6 x 10 times, and its backward never
def test_the_probe_reports_every_level_and_penalty():
    torch.manual_seed(0)
    tokenizer = micro_tokenizer()
    text = text_encoder_from_clip(new_clip(tokenizer))
    probes = probe_set(new_vae().eval(), 1.0, n=2)
    result = probe(probes, new_unet().eval(), text, tokenizer, DDPMScheduler.from_config(scheduler().config))
    assert result["levels"] == list(LEVELS) and result["scenes"] == 2
    assert len(result["loss"]) == len(LEVELS) and all(np.isfinite(result["loss"]))
    assert set(result["penalty"]) == {"position", "shape", "circle_square", "color", "no_caption"}
    assert all(len(v) == len(LEVELS) for v in result["penalty_shape_cells"].values())
