"""Tiny real diffusers components built from configs, with random weights.

They are saved with `save_pretrained` and loaded back with `from_pretrained`,
exactly like a downloaded checkpoint, so tests and the offline example exercise
the real loading and sampling code without any download. The CLIP tokenizer is an
honest byte-level BPE (every byte is a token, no merges) and the T5 one a unigram
model over printable ASCII characters: neither fails on text.

One builder per family (SD 1.x, SDXL, SD3, Flux), each with a VAE of factor 4, and
`build_tiny_controlnet` for any of them. ControlNets start from zero-initialised
output layers in diffusers (a fresh one changes nothing); the tiny ones get small
random weights there instead, so a test can see them condition the image.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxPipeline,
    FluxTransformer2DModel,
    LCMScheduler,
    SD3ControlNetModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

TEXT_MAX_LENGTH = 77
T5_MAX_LENGTH = 512


def byte_level_tokenizer(max_length: int = TEXT_MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (plus end-of-word forms)."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [a + "</w>" for a in alphabet] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[symbol] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _sd_scheduler() -> EulerDiscreteScheduler:
    """The noise schedule Stable Diffusion 1.x and SDXL ship with."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


def build_tiny_sd(
    path: str | Path, *, seed: int = 0, width: int = 64, time_cond_proj_dim: int | None = None, scheduler=None
) -> Path:
    """Write a Stable Diffusion 1.x-layout pipeline of ~1.5 M parameters to `path`.

    `time_cond_proj_dim` gives the UNet a guidance embedding as an LCM-distilled UNet has (diffusers then
    runs no unconditional pass); `scheduler` replaces Stable Diffusion's Euler."""
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=TEXT_MAX_LENGTH,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=width,
    )
    unet = UNet2DConditionModel(
        sample_size=width // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
        cross_attention_dim=32,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    scheduler = scheduler or _sd_scheduler()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = Path(path)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_lcm(path: str | Path, *, seed: int = 3, width: int = 64) -> Path:
    """Write an LCM-distilled-style Stable Diffusion 1.x folder to `path`: a UNet with a guidance
    embedding (`time_cond_proj_dim`) and the LCMScheduler config LCM checkpoints ship with."""
    scheduler = LCMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        original_inference_steps=50, set_alpha_to_one=True, steps_offset=1,
    )  # fmt: skip
    out = build_tiny_sd(path, seed=seed, width=width, time_cond_proj_dim=32, scheduler=scheduler)
    # Default-initialised, the guidance embedding is lost in the timestep embedding it is added to;
    # wider weights let a test see guidance_scale reach the UNet, as it does in a distilled one.
    unet = UNet2DConditionModel.from_pretrained(out / "unet")
    torch.manual_seed(seed)
    with torch.no_grad():
        unet.time_embedding.cond_proj.weight.normal_(0.0, 1.0)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    return out


def t5_tokenizer(max_length: int = T5_MAX_LENGTH) -> T5Tokenizer:
    """A T5 (unigram) tokenizer whose pieces are the printable ASCII characters; anything else is <unk>."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.printable if not c.isspace()]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def _clip(tokenizer: CLIPTokenizer, *, projection: bool = False, hidden: int = 32) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=TEXT_MAX_LENGTH,
        projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _t5(tokenizer: T5Tokenizer, d_model: int) -> T5EncoderModel:
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=16,
            d_ff=2 * d_model,
            num_layers=1,
            num_heads=d_model // 16,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def _vae(width: int, *, flow: bool = False, latent_channels: int = 4) -> AutoencoderKL:
    """Factor 4 (three blocks). Flow-matching families (SD3, Flux) read a shift factor and skip the quant convs."""
    extra = {"shift_factor": 0.0609, "scaling_factor": 1.5035, "use_quant_conv": False, "use_post_quant_conv": False}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=width,
        **(extra if flow else {}),
    )


def _save(pipe: DiffusionPipeline, path: str | Path) -> Path:
    out = Path(path)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_sdxl(path: str | Path, *, seed: int = 0, width: int = 64) -> Path:
    """Write a Stable Diffusion XL-layout pipeline (two CLIP encoders, text-time embedding) to `path`."""
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = byte_level_tokenizer(), byte_level_tokenizer()
    text_encoder = _clip(tokenizer)
    text_encoder_2 = _clip(tokenizer_2, projection=True)
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=width // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=8,
        # SDXL conditions on both encoders' hidden states and on the pooled text plus six size/crop numbers.
        cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + text_encoder_2.config.projection_dim,
    )
    scheduler = _sd_scheduler()
    pipe = StableDiffusionXLPipeline(
        vae=_vae(width),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    return _save(pipe, path)


def build_tiny_sd3(path: str | Path, *, seed: int = 0, width: int = 64) -> Path:
    """Write a Stable Diffusion 3-layout pipeline (two CLIP encoders and a T5, an MMDiT) to `path`."""
    torch.manual_seed(seed)
    tokenizer, tokenizer_2, tokenizer_3 = byte_level_tokenizer(), byte_level_tokenizer(), t5_tokenizer()
    text_encoder = _clip(tokenizer, projection=True)
    text_encoder_2 = _clip(tokenizer_2, projection=True)
    # SD3 pads the concatenated CLIP states up to the T5 width, and concatenates the pooled outputs.
    t5_width = 2 * text_encoder.config.hidden_size
    text_encoder_3 = _t5(tokenizer_3, t5_width)
    # 16 latent channels as in SD3 itself: its inpainting pipeline insists on them.
    vae = _vae(width, flow=True, latent_channels=16)
    transformer = SD3Transformer2DModel(
        sample_size=width // 4,
        patch_size=1,
        in_channels=16,
        out_channels=16,
        # Two blocks: the last one only updates the image stream, and ControlNet residuals skip it.
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=t5_width,
        pooled_projection_dim=2 * text_encoder.config.projection_dim,
        pos_embed_max_size=width // 4,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    return _save(pipe, path)


def build_tiny_flux(path: str | Path, *, seed: int = 0, width: int = 64) -> Path:
    """Write a Flux-layout pipeline (CLIP pooled + T5 states, a guidance-embedding transformer) to `path`."""
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = byte_level_tokenizer(), t5_tokenizer()
    text_encoder = _clip(tokenizer)
    t5_width = 64
    text_encoder_2 = _t5(tokenizer_2, t5_width)
    vae = _vae(width, flow=True)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * vae.config.latent_channels,  # latents are packed in 2x2 patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5_width,
        pooled_projection_dim=text_encoder.config.hidden_size,
        # Like FLUX.1-dev: guidance_scale enters as an embedding, so it changes the image without a second pass.
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    return _save(pipe, path)


def _wake(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Give zero-initialised parameters (ControlNet output layers) small random values."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim > 1 and not param.any():
                param.normal_(0.0, std)
    return model


def build_tiny_controlnet(
    pipeline: str | Path, path: str | Path, *, seed: int = 1, std: float = 0.05, cond_std: float = 0.2
) -> Path:
    """Write a ControlNet that fits the tiny pipeline folder `pipeline` (any family) to `path`."""
    torch.manual_seed(seed)
    pipeline = Path(pipeline)
    family = json.loads((pipeline / "model_index.json").read_text())["_class_name"]
    if family in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        unet = UNet2DConditionModel.from_pretrained(pipeline / "unet")
        vae_factor = 2 ** (len(AutoencoderKL.load_config(pipeline / "vae")["block_out_channels"]) - 1)
        # The conditioning embedding must shrink the control image by the VAE factor.
        channels = tuple(8 * 2**i for i in range(vae_factor.bit_length()))
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
        # Default-initialised, the small conditioning encoder's output is lost next to the latent's
        # features; wider weights make the control image itself matter, not just the ControlNet's presence.
        for module in controlnet.controlnet_cond_embedding.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.normal_(module.weight, 0.0, cond_std)
    elif family == "StableDiffusion3Pipeline":
        c = SD3Transformer2DModel.load_config(pipeline / "transformer")
        keys = (
            "sample_size", "patch_size", "in_channels", "out_channels", "attention_head_dim", "num_attention_heads",
            "joint_attention_dim", "caption_projection_dim", "pooled_projection_dim", "pos_embed_max_size",
        )  # fmt: skip
        controlnet = SD3ControlNetModel(num_layers=1, **{k: c[k] for k in keys})
    elif family == "FluxPipeline":
        transformer = FluxTransformer2DModel.from_pretrained(pipeline / "transformer")
        c = transformer.config
        controlnet = FluxControlNetModel.from_transformer(
            transformer,
            num_layers=1,
            num_single_layers=0,
            attention_head_dim=c.attention_head_dim,
            num_attention_heads=c.num_attention_heads,
        )
    else:
        raise ValueError(f"Unknown pipeline class '{family}'. Choose from: StableDiffusionPipeline, "
                         "StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline")  # fmt: skip
    out = Path(path)
    _wake(controlnet, std).save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_lora(pipeline: str | Path, path: str | Path, *, seed: int = 2, rank: int = 4) -> Path:
    """Write a LoRA file for the tiny SD 1.x pipeline `pipeline` (attention projections of its UNet) to `path`.

    PEFT normally starts LoRA-B at zero (an adapter that changes nothing); this one is random
    on both sides so that loading it visibly changes the image. Needs the `peft` package.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(Path(pipeline) / "unet")
    unet.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
        )
    )
    out = Path(path)
    StableDiffusionPipeline.save_lora_weights(
        out.parent,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        weight_name=out.name,
        safe_serialization=True,
    )
    return out


def build_tiny_embedding(
    pipeline: str | Path, path: str | Path, *, token: str = "<tiny-concept>", vectors: int = 2, seed: int = 4
) -> Path:
    """Write a textual-inversion embedding for the tiny SD 1.x pipeline `pipeline` to `path`, in diffusers'
    format ({token: [vectors, width]}). Its vectors are ten times the spread of the tiny encoder's own
    token embeddings, so that the token visibly steers the image."""
    from safetensors.torch import save_file

    encoder = CLIPTextModel.from_pretrained(Path(pipeline) / "text_encoder")
    table = encoder.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.randn(vectors, table.shape[1], generator=generator) * float(table.detach().std()) * 10.0
    out = Path(path)
    save_file({token: embedding.contiguous()}, str(out))
    return out


def build_tiny_ip_adapter(pipeline: str | Path, path: str | Path, *, seed: int = 6, std: float = 0.3) -> Path:
    """Write an IP-Adapter for the tiny SD 1.x pipeline `pipeline` to the folder `path`: `ip-adapter.safetensors`
    (diffusers' layout: `image_proj.*`, a projection of the image embedding to 4 tokens, and `ip_adapter.<k>.to_k_ip`
    / `to_v_ip` for each cross-attention layer, k = 1, 3, 5, ...) and `image_encoder/`, a tiny CLIP vision encoder
    with projection. Weights are random and wide enough that the image prompt visibly steers the image."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    out = Path(path)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                         image_size=32, patch_size=8, projection_dim=32)
    )  # fmt: skip
    encoder.save_pretrained(out / "image_encoder", safe_serialization=True)
    unet = UNet2DConditionModel.from_pretrained(Path(pipeline) / "unet")
    cross = unet.config.cross_attention_dim
    tensors = {
        "image_proj.proj.weight": torch.randn(4 * cross, encoder.config.projection_dim) * std,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.weight.shape[0]
        tensors[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * std
        tensors[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * std
        key += 2
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "ip-adapter.safetensors"))
    return out
