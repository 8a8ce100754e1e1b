"""Real-size SD 1.5 / SDXL architectures: built on the meta device, so nothing is allocated or written."""

from __future__ import annotations

import pytest
import torch

from diffgen.generation.families import family_for
from lab.builders.real_size import (
    ARCHITECTURES,
    CLIP_VOCAB_SIZE,
    architecture,
    clip_tokenizer,
    components,
    parameter_counts,
)

# Published totals (sum of the checkpoints' tensor sizes) of runwayml/stable-diffusion-v1-5 and
# stabilityai/stable-diffusion-xl-base-1.0, written out here independently of the module's table.
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_checkpoints(name):
    assert parameter_counts(name) == PUBLISHED[name]
    assert ARCHITECTURES[name].published_parameters == PUBLISHED[name]


def test_components_are_the_published_shapes():
    sd15 = components("sd15")
    assert all(p.device.type == "meta" for m in sd15.values() for p in m.parameters())
    unet = sd15["unet"]
    assert list(unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert unet.config.cross_attention_dim == 768
    assert unet.conv_in.weight.shape == (320, 4, 3, 3)
    assert sd15["text_encoder"].get_input_embeddings().weight.shape == (CLIP_VOCAB_SIZE, 768)

    sdxl = components("sdxl")
    unet = sdxl["unet"]
    assert list(unet.config.transformer_layers_per_block) == [1, 2, 10]
    assert unet.config.addition_embed_type == "text_time"
    # text_time: 2 x 1280 pooled text + 6 micro-conditions x 256 = the published 2816 inputs
    assert unet.add_embedding.linear_1.in_features == 2816
    # cross-attention keys read the two encoders' hidden states side by side: 768 + 1280
    assert unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k.in_features == 2048
    assert len(unet.down_blocks[2].attentions[0].transformer_blocks) == 10
    assert sdxl["text_encoder_2"].text_projection.weight.shape == (1280, 1280)
    assert sdxl["vae"].config.scaling_factor == 0.13025


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_a_pipeline_assembles_and_is_a_family_diffgen_runs(name):
    arch = architecture(name)
    tokenizers = {
        "tokenizer" if i == 0 else f"tokenizer_{i + 1}": clip_tokenizer(pad_token=pad)
        for i, pad in enumerate(arch.pad_tokens)
    }
    pipe = arch.pipeline(**components(name), **tokenizers, scheduler=arch.scheduler(), **arch.pipeline_kwargs)
    assert family_for(type(pipe).__name__).name == {"sd15": "sd", "sdxl": "sdxl"}[name]
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.dtype == torch.float32


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="Unknown architecture 'sd3'. Choose from: sd15, sdxl"):
        architecture("sd3")


def test_stand_in_tokenizer_has_clips_ids():
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    # The byte alphabet sits at CLIP's own ids: 'a' alone is 320 ('a</w>'), and '!' is 0.
    ids = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert ids[:2] == [49406, 320] and ids[-1] == 49407 and len(ids) == 77
    assert all(0 <= i < CLIP_VOCAB_SIZE for i in ids)
    assert clip_tokenizer(pad_token="!").pad_token_id == 0
    long = tokenizer("word " * 200, truncation=True, max_length=77).input_ids
    assert len(long) == 77 and long[-1] == 49407


def test_real_tokenizer_from_the_bpe_file(tmp_path):
    # A BPE file in CLIP's format but with made-up merges: the vocabulary layout is what is checked.
    from lab.builders.real_size import CLIP_MERGES, bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    pairs = (f"{x} {y}" for x in alphabet for y in alphabet if x + y != "ca")
    lines = ["#version: 0.2", "c a", "ca t</w>"] + [next(pairs) for _ in range(CLIP_MERGES - 2)]
    path = tmp_path / "bpe.txt"
    path.write_text("\n".join(lines) + "\n")
    tokenizer = clip_tokenizer(path)
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    assert tokenizer.convert_ids_to_tokens([512, 513]) == ["ca", "cat</w>"]
    assert tokenizer("cat").input_ids == [49406, 513, 49407]
    path.write_text("#version: 0.2\nc a\n")
    with pytest.raises(ValueError, match="expected 48894 merge lines"):
        clip_tokenizer(path)
