"""Model families: which diffusers pipeline class runs each kind of request for a checkpoint.

A checkpoint's `model_index.json` names its text-to-image class; that picks the family,
and the family's table gives the img2img, inpaint and ControlNet classes built from it
with `from_pipe` (the same weights, loaded once). A mode diffusers has no class for is
absent from the table, and rows that need it are rejected with that reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import diffusers
from diffusers import DiffusionPipeline

# What a row asks for, from the inputs it carries.
MODES: tuple[str, ...] = ("text2img", "img2img", "inpaint", "controlnet", "controlnet_img2img", "controlnet_inpaint")


def mode_for(*, init_image: bool, mask_image: bool, control: bool) -> str:
    base = "inpaint" if mask_image else "img2img" if init_image else "text2img"
    if not control:
        return base
    return "controlnet" if base == "text2img" else f"controlnet_{base}"


@dataclass(frozen=True)
class Family:
    name: str
    pipelines: dict[str, type[DiffusionPipeline]]
    # ControlNet model classes by their config's `_class_name`, and the wrapper that runs several at once.
    controlnets: dict[str, type]
    multi_controlnet: type
    # Whether `guidance_scale` means classifier-free guidance. Flux's is a distilled guidance
    # embedding: it never runs an unconditional pass.
    classifier_free: bool = True
    # Sizes must be multiples of the VAE factor times the latent patch (a constant, or a pipeline
    # attribute read from the checkpoint); pipelines whose checks hard-code 8 add it per mode.
    latent_patch: int = 1
    patch_size_attr: str | None = None
    hard_multiple: dict[str, int] = field(default_factory=dict)
    # diffusers' SD3 ControlNet pipeline samples the control image's VAE posterior from the
    # global RNG, not the request's generator: such calls run one image at a time under a
    # global seed taken from the record, so the image still depends only on its own seed.
    controlnet_global_rng: bool = False
    # diffusers' Flux ControlNet pipelines sample the control image's VAE posterior with the
    # request's generator before drawing the initial noise; drawing the noise first (as the
    # text-to-image pipeline does) keeps "a ControlNet at scale 0 changes nothing" true.
    controlnet_noise_first: bool = False
    # Extra arguments for the pipeline classes' constructors (from_pretrained and from_pipe alike).
    init_kwargs: dict[str, object] = field(default_factory=dict)

    def size_multiple(self, pipe: DiffusionPipeline, mode: str) -> int:
        factor = pipe.vae_scale_factor * self.latent_patch
        if self.patch_size_attr is not None:
            factor *= getattr(pipe, self.patch_size_attr)
        return math.lcm(factor, self.hard_multiple.get(mode, 1))


def _classes(**names: str) -> dict[str, type[DiffusionPipeline]]:
    return {mode: getattr(diffusers, name) for mode, name in names.items()}


# Stable Diffusion pipelines check `height % 8` whatever the VAE factor.
_EIGHT = dict.fromkeys(MODES, 8)

FAMILIES: dict[str, Family] = {
    "sd": Family(
        name="sd",
        pipelines=_classes(
            text2img="StableDiffusionPipeline",
            img2img="StableDiffusionImg2ImgPipeline",
            inpaint="StableDiffusionInpaintPipeline",
            controlnet="StableDiffusionControlNetPipeline",
            controlnet_img2img="StableDiffusionControlNetImg2ImgPipeline",
            controlnet_inpaint="StableDiffusionControlNetInpaintPipeline",
        ),
        controlnets={"ControlNetModel": diffusers.ControlNetModel},
        multi_controlnet=diffusers.MultiControlNetModel,
        hard_multiple=_EIGHT,
    ),
    "sdxl": Family(
        name="sdxl",
        pipelines=_classes(
            text2img="StableDiffusionXLPipeline",
            img2img="StableDiffusionXLImg2ImgPipeline",
            inpaint="StableDiffusionXLInpaintPipeline",
            controlnet="StableDiffusionXLControlNetPipeline",
            controlnet_img2img="StableDiffusionXLControlNetImg2ImgPipeline",
            controlnet_inpaint="StableDiffusionXLControlNetInpaintPipeline",
        ),
        controlnets={"ControlNetModel": diffusers.ControlNetModel},
        multi_controlnet=diffusers.MultiControlNetModel,
        hard_multiple=_EIGHT,
        # diffgen marks images itself (its watermark stage); SDXL's built-in mark would stack on it.
        init_kwargs={"add_watermarker": False},
    ),
    # diffusers has no SD3 ControlNet img2img pipeline, and its SD3 ControlNet inpainting
    # pipeline is a different thing (the ControlNet itself inpaints), so both are left out.
    "sd3": Family(
        name="sd3",
        pipelines=_classes(
            text2img="StableDiffusion3Pipeline",
            img2img="StableDiffusion3Img2ImgPipeline",
            inpaint="StableDiffusion3InpaintPipeline",
            controlnet="StableDiffusion3ControlNetPipeline",
        ),
        controlnets={"SD3ControlNetModel": diffusers.SD3ControlNetModel},
        multi_controlnet=diffusers.SD3MultiControlNetModel,
        patch_size_attr="patch_size",
        hard_multiple={"controlnet": 8},
        controlnet_global_rng=True,
    ),
    "flux": Family(
        name="flux",
        pipelines=_classes(
            text2img="FluxPipeline",
            img2img="FluxImg2ImgPipeline",
            inpaint="FluxInpaintPipeline",
            controlnet="FluxControlNetPipeline",
            controlnet_img2img="FluxControlNetImg2ImgPipeline",
            controlnet_inpaint="FluxControlNetInpaintPipeline",
        ),
        controlnets={"FluxControlNetModel": diffusers.FluxControlNetModel},
        multi_controlnet=diffusers.FluxMultiControlNetModel,
        classifier_free=False,
        latent_patch=2,  # latents are packed in 2x2 patches
        controlnet_noise_first=True,
    ),
}

# model_index.json `_class_name` -> family. Only base checkpoints: an inpainting-only or
# refiner checkpoint has different components and is refused by name.
FAMILY_BY_INDEX_CLASS: dict[str, str] = {f.pipelines["text2img"].__name__: name for name, f in FAMILIES.items()}


class UnknownFamilyError(ValueError):
    pass


def family_for(index_class: object) -> Family:
    """The family of a model_index.json `_class_name`, which comes from JSON and may be any value."""
    if not isinstance(index_class, str) or index_class not in FAMILY_BY_INDEX_CLASS:
        choices = ", ".join(FAMILY_BY_INDEX_CLASS)
        # diffusers reads a [module, class] list as a custom pipeline's code, which diffgen never runs.
        named = f"'{index_class}'" if isinstance(index_class, str) else f"{index_class!r} (not a class name)"
        raise UnknownFamilyError(f"Unknown pipeline class {named} in model_index.json. Choose from: {choices}")
    return FAMILIES[FAMILY_BY_INDEX_CLASS[index_class]]
