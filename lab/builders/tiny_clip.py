"""A tiny real CLIP model built from a config, with random weights, for tests and the offline default.

Saved with `save_pretrained` in the same layout as a downloaded CLIP folder (config,
safetensors weights, tokenizer, PIL image processor), so `ClipModel` loads it through the
real `from_pretrained` path. Its embeddings are random but deterministic: scores made with it
test the plumbing, not image-text agreement.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

from lab.builders.tiny import TEXT_MAX_LENGTH, byte_level_tokenizer


def build_tiny_clip(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Write a CLIP model of ~60 k parameters (patch 8, 16-d projections) to `path`."""
    if not 16 <= image_size <= 64 or image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8 in [16, 64], got {image_size}")
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    model = CLIPModel(config)
    # Independent random towers embed every image and every text in unrelated directions, so
    # nearly all cosines are negative and every score clamps to 0, which would let score tests
    # pass vacuously. One shared projection and one shared final layer-norm offset point both
    # towers the same rough way; scores then spread over roughly 25..40.
    with torch.no_grad():
        model.visual_projection.weight.copy_(model.text_projection.weight)
        offset = 0.5 * torch.randn(config.vision_config.hidden_size)
        model.vision_model.post_layernorm.bias.copy_(offset)
        model.text_model.final_layer_norm.bias.copy_(offset)
    out = Path(path)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out
