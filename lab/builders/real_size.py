"""Stable Diffusion 1.5 and SDXL base 1.0 at their published sizes, with random weights.

The config dicts below are the published `config.json` files of runwayml/stable-diffusion-v1-5
and stabilityai/stable-diffusion-xl-base-1.0 (UNet, VAE, CLIP text encoders, scheduler), so a
folder built here has the real architectures' shapes, parameter counts and FLOPs: a GPU session
measures true throughput without downloading anything. The weights are random (PyTorch's default
initialisation), so the images are noise. SD 1.5's safety checker is left out, as diffgen runs
without one.

The CLIP tokenizer needs the real BPE merges (`bpe_simple_vocab_16e6.txt.gz`, shipped with the
`open-clip-torch` and OpenAI `clip` packages) to split text as CLIP does; no installed package
ships it, so without one `clip_tokenizer` builds a stand-in with CLIP's 49,408 ids, its special
tokens at their ids (start 49406, end 49407) and a byte-level alphabet at CLIP's own ids 0-511
(every word split into single bytes; ids 512-49405 are never produced). Throughput does not
depend on which ids a prompt maps to, only on the 77-token sequence the encoders always see.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
# The merges CLIP uses: the file's lines 1 .. 48894 (line 0 is a version header).
CLIP_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"

SD15_UNET: dict[str, object] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_VAE: dict[str, object] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# openai/clip-vit-large-patch14's text tower: SD 1.5's encoder and SDXL's first one.
CLIP_L_TEXT: dict[str, object] = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": CLIP_MAX_LENGTH,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": CLIP_VOCAB_SIZE,
}

# The published scheduler files carry keys of other schedulers too (clip_sample, ...); `from_config`
# keeps what the class takes, as `from_pretrained` does.
SD15_SCHEDULER: dict[str, object] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

SDXL_UNET: dict[str, object] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}

SDXL_VAE: dict[str, object] = {
    **SD15_VAE,
    "force_upcast": True,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
}

# laion/CLIP-ViT-bigG-14's text tower, with its projection: SDXL's second encoder.
CLIP_BIGG_TEXT: dict[str, object] = {
    **CLIP_L_TEXT,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}

SDXL_SCHEDULER: dict[str, object] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class Architecture:
    """A published pipeline: its components' configs and their published parameter counts."""

    pipeline: type[DiffusionPipeline]
    unet: dict[str, object]
    vae: dict[str, object]
    text_encoders: tuple[tuple[type[CLIPTextModel], dict[str, object]], ...]
    # pad token of each tokenizer, in text-encoder order
    pad_tokens: tuple[str, ...]
    scheduler: Callable[[], object]
    published_parameters: dict[str, int]
    pipeline_kwargs: dict[str, object]


ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture(
        pipeline=StableDiffusionPipeline,
        unet=SD15_UNET,
        vae=SD15_VAE,
        text_encoders=((CLIPTextModel, CLIP_L_TEXT),),
        pad_tokens=(END,),
        scheduler=lambda: PNDMScheduler.from_config(SD15_SCHEDULER),
        published_parameters={"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
        pipeline_kwargs={"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    ),
    "sdxl": Architecture(
        pipeline=StableDiffusionXLPipeline,
        unet=SDXL_UNET,
        vae=SDXL_VAE,
        text_encoders=((CLIPTextModel, CLIP_L_TEXT), (CLIPTextModelWithProjection, CLIP_BIGG_TEXT)),
        pad_tokens=(END, "!"),
        scheduler=lambda: EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        published_parameters={
            "unet": 2_567_463_684,
            "vae": 83_653_863,
            "text_encoder": 123_060_480,
            "text_encoder_2": 694_659_840,
        },
        pipeline_kwargs={"force_zeros_for_empty_prompt": True, "add_watermarker": False},
    ),
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture '{name}'. Choose from: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) byte -> printable character table, in CLIP's id order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def clip_tokenizer(bpe: str | Path | None = None, *, pad_token: str = END) -> CLIPTokenizer:
    """A CLIP tokenizer with CLIP's 49,408 ids: the real one from `bpe` (bpe_simple_vocab_16e6.txt[.gz]),
    else the byte-level stand-in described in the module docstring."""
    alphabet = list(bytes_to_unicode().values())
    symbols = alphabet + [a + "</w>" for a in alphabet]
    if bpe is not None:
        raw = Path(bpe).read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
        merges = [tuple(line.split()) for line in text.split("\n")[1 : CLIP_MERGES + 1]]
        if len(merges) != CLIP_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{bpe}: expected {CLIP_MERGES} merge lines after the header, as in CLIP's BPE file")
        symbols += ["".join(m) for m in merges]
    else:
        merges = []
        symbols += [f"<|unused-{i}|>" for i in range(len(symbols), CLIP_VOCAB_SIZE - 2)]
    vocab = {s: i for i, s in enumerate([*symbols, START, END])}
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=CLIP_MAX_LENGTH)


def components(name: str, *, device: str | torch.device = "meta") -> dict[str, torch.nn.Module]:
    """The UNet, VAE and text encoder(s) of `name`, built on `device` in fp32 with random weights.

    On the "meta" device nothing is allocated: shapes and parameter counts only.
    """
    arch = architecture(name)
    with torch.device(device):
        built: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel(**arch.unet),
            "vae": AutoencoderKL(**arch.vae),
        }
        for i, (cls, config) in enumerate(arch.text_encoders):
            built["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = cls(CLIPTextConfig(**config))
    return built


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per component, counted on the meta device (no memory, well under a second)."""
    return {key: sum(p.numel() for p in module.parameters()) for key, module in components(name).items()}


def build_real_size(
    name: str,
    path: str | Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float16,
    bpe: str | Path | None = None,
) -> Path:
    """Write the `name` pipeline with random weights to `path` (diffusers layout, safetensors).

    Weights are initialised on `device` (a GPU does it in seconds) and stored as `dtype`:
    fp16 makes SD 1.5 ~2.1 GB and SDXL ~6.9 GB on disk.
    """
    arch = architecture(name)
    torch.manual_seed(seed)
    modules = {key: module.to(dtype).eval() for key, module in components(name, device=device).items()}
    tokenizers = {
        "tokenizer" if i == 0 else f"tokenizer_{i + 1}": clip_tokenizer(bpe, pad_token=pad)
        for i, pad in enumerate(arch.pad_tokens)
    }
    pipe = arch.pipeline(**modules, **tokenizers, scheduler=arch.scheduler(), **arch.pipeline_kwargs)
    out = Path(path)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# The published CLIP configs QC uses at real size: openai/clip-vit-base-patch32 and clip-vit-large-patch14
# (the CLIP score's usual model). Only the shapes that set the cost are given; the rest are CLIPConfig's
# defaults, which equal the published values.
CLIP_MODELS: dict[str, dict[str, dict]] = {
    "vit-b-32": {
        "text": {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 12},
        "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
                   "patch_size": 32, "image_size": 224},
        "projection_dim": {"value": 512},
    },
    "vit-l-14": {
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12},
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                   "num_hidden_layers": 24, "patch_size": 14, "image_size": 224},
        "projection_dim": {"value": 768},
    },
}  # fmt: skip


def build_real_size_clip(path: str | Path, name: str = "vit-l-14", *, seed: int = 0) -> Path:
    """A CLIP folder (model, tokenizer, PIL image processor) at a published size with random weights,
    in the layout QC's `clip_model` loads."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    shapes = CLIP_MODELS[name]
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config={**shapes["text"], "vocab_size": CLIP_VOCAB_SIZE, "max_position_embeddings": CLIP_MAX_LENGTH,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config=shapes["vision"],
        projection_dim=shapes["projection_dim"]["value"],
    )
    out = Path(path)
    CLIPModel(config).eval().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    size = shapes["vision"]["image_size"]
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out)
    return out
