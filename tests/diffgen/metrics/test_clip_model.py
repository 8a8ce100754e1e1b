"""Loading a CLIP folder: the recorded name and resize mode, embeddings, and clear errors."""

import numpy as np
import pytest

from diffgen.metrics.clip_model import ClipLoadError, ClipModel


def test_embeddings_have_the_projection_dim(clip_model, make_images):
    images = make_images(3, seed=0)
    assert clip_model.image_embeddings(images).shape == (3, 16)
    assert clip_model.text_embeddings(["a", "b c"]).shape == (2, 16)
    assert clip_model.image_embeddings([]).shape == (0, 16)
    assert clip_model.truncated([]).shape == (0,)


def test_text_embeddings_do_not_depend_on_padding(clip_model):
    # Padded to the longest prompt in the batch, a short prompt must embed as it does alone.
    alone = clip_model.text_embeddings(["hi"])
    padded = clip_model.text_embeddings(["hi", "a much longer prompt that forces padding"])[:1]
    np.testing.assert_allclose(padded, alone, rtol=0, atol=1e-5)
    assert np.linalg.norm(clip_model.text_embeddings(["ho"]) - alone) > 1e-4


def test_missing_or_incomplete_folders_are_named(tmp_path, tiny_clip):
    with pytest.raises(ClipLoadError, match=r"nowhere is not a model folder \(no config.json\)"):
        ClipModel(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((tiny_clip / "config.json").read_text())
    with pytest.raises(ClipLoadError, match="partial has no .safetensors weights"):
        ClipModel(partial)
    (partial / "model.safetensors").write_bytes((tiny_clip / "model.safetensors").read_bytes())
    with pytest.raises(ClipLoadError, match="cannot load .*partial"):
        ClipModel(partial)  # no tokenizer files
