"""IP-Adapter: an image prompt beside the text prompt (Ye et al. 2023, arXiv:2308.06721).

diffusers' `load_ip_adapter` adds decoupled cross-attention for image tokens to the UNet and
`set_ip_adapter_scale` weighs them; at scale 0 they add exact zeros, so the image is the plain
pipeline's. The CLIP vision encoder is loaded here, from its own folder and from safetensors only,
and registered on the pipeline before the adapter, so diffusers never looks it up by itself.
Every variant built with `from_pipe` shares the UNet and the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diffusers import DiffusionPipeline
from transformers import CLIPVisionModelWithProjection

from diffgen.generation.weights_check import WeightsFileError, check_safetensors, check_weights
from diffgen.schemas.job import IpAdapterSpec

# Families whose pipelines take `ip_adapter_image` with the basic adapter layout loaded here.
FAMILIES = ("sd", "sdxl")


class IpAdapterError(ValueError):
    """An IP-Adapter that is missing, unreadable or does not fit the model; names the field."""


def check_ip_adapters(specs: Sequence[IpAdapterSpec], family: str) -> None:
    """What can be checked without loading weights: the family, the adapter file's and the encoder's headers."""
    if specs and family not in FAMILIES:
        raise IpAdapterError(f"ip_adapters: a {family} model is not supported (SD 1.x/2.x and SDXL are)")
    for i, spec in enumerate(specs):
        weights, encoder = Path(spec.weights), Path(spec.image_encoder)
        if not weights.is_file():
            raise IpAdapterError(f"ip_adapters.{i}.weights: {spec.weights} is not a file")
        if not (encoder / "config.json").is_file():
            raise IpAdapterError(f"ip_adapters.{i}.image_encoder: {spec.image_encoder} has no config.json")
        try:
            check_safetensors(weights)
        except WeightsFileError as e:
            raise IpAdapterError(f"ip_adapters.{i}.weights: {e}") from None
        try:
            check_weights(encoder, "transformers", allow_pickle=False)
        except WeightsFileError as e:
            raise IpAdapterError(f"ip_adapters.{i}.image_encoder: {e}") from None


def load_ip_adapters(pipe: DiffusionPipeline, specs: Sequence[IpAdapterSpec]) -> None:
    """Load the adapters (one image encoder, the first's) and set their scales."""
    if not specs:
        return
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(
            specs[0].image_encoder, use_safetensors=True, local_files_only=True, dtype=pipe.dtype
        ).to(pipe.device)
    except (OSError, ValueError) as e:
        raise IpAdapterError(f"ip_adapters.0.image_encoder: cannot load {specs[0].image_encoder}: {e}"[:800]) from None
    pipe.register_modules(image_encoder=encoder)
    weights = [Path(s.weights) for s in specs]
    try:
        pipe.load_ip_adapter(
            [str(w.parent) for w in weights],
            subfolder=[""] * len(weights),
            weight_name=[w.name for w in weights],
            image_encoder_folder=None,
            local_files_only=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise IpAdapterError(f"ip_adapters: cannot load {', '.join(map(str, weights))}: {e}"[:800]) from None
    pipe.set_ip_adapter_scale([s.scale for s in specs])
