"""The tiny CLIP builder: a folder laid out like a downloaded checkpoint, loadable offline, seeded."""

import os

import pytest
import torch
from transformers import CLIPModel

from lab.builders.tiny_clip import build_tiny_clip


def test_folder_layout_and_offline_reload(tiny_clip):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    files = {p.name for p in tiny_clip.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"} <= files
    model = CLIPModel.from_pretrained(tiny_clip, local_files_only=True)
    assert model.config.vision_config.image_size == 32 and model.config.vision_config.patch_size == 8
    assert sum(p.numel() for p in model.parameters()) < 100_000


def test_same_seed_same_weights(tmp_path):
    a = CLIPModel.from_pretrained(build_tiny_clip(tmp_path / "a", seed=3))
    b = CLIPModel.from_pretrained(build_tiny_clip(tmp_path / "b", seed=3))
    c = CLIPModel.from_pretrained(build_tiny_clip(tmp_path / "c", seed=4, image_size=64))
    assert torch.equal(a.text_projection.weight, b.text_projection.weight)
    assert not torch.equal(a.text_projection.weight, c.text_projection.weight)
    assert c.config.vision_config.image_size == 64


def test_bad_image_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of 8 in \\[16, 64\\], got 30"):
        build_tiny_clip(tmp_path / "x", image_size=30)
