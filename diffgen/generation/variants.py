"""One loaded checkpoint and every pipeline variant built on it (img2img, inpaint, ControlNet, ...).

Variants come from diffusers' `from_pipe`: they share the base pipeline's modules, so an
actor holds one copy of the weights however many kinds of request it serves. Each is
built the first time a request needs it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from functools import cache

import torch
from diffusers import DiffusionPipeline

from diffgen.generation.families import FAMILY_BY_INDEX_CLASS, Family, family_for
from diffgen.schemas.job import ControlNetSpec, IpAdapterSpec

log = logging.getLogger(__name__)


@cache
def call_parameters(cls: type[DiffusionPipeline]) -> frozenset[str]:
    """The keyword arguments a pipeline class's `__call__` accepts."""
    return frozenset(inspect.signature(cls.__call__).parameters)


class PipelineSet:
    """The base (text-to-image) pipeline of a family, its ControlNets, and variants built on demand."""

    def __init__(
        self,
        base: DiffusionPipeline,
        family: Family | None = None,
        controlnets: Sequence[tuple[ControlNetSpec, torch.nn.Module]] = (),
        *,
        offload_device: torch.device | None = None,
    ):
        self.base = base
        self.family = family or family_for(type(base).__name__)
        self.controlnet_specs: list[ControlNetSpec] = [spec for spec, _ in controlnets]
        models = [model for _, model in controlnets]
        if len(models) > 1:
            self.controlnet: torch.nn.Module | None = self.family.multi_controlnet(models)
        else:
            self.controlnet = models[0] if models else None
        self.offload_device = offload_device
        # (width, height) pairs rows must use; None samples any size (see loading.trained_sizes)
        self.trained_sizes: tuple[tuple[int, int], ...] | None = None
        self._variants: dict[str, DiffusionPipeline] = {"text2img": base}
        self._offloaded_mode: str | None = None
        self._steps_refusals: dict[int, str | None] = {}
        self.ip_adapter_specs: list[IpAdapterSpec] = []  # loaded into the base pipeline's UNet

    @classmethod
    def wrap(cls, pipe: DiffusionPipeline | PipelineSet) -> PipelineSet:
        """A plain text-to-image pipeline as a set without ControlNets."""
        if isinstance(pipe, PipelineSet):
            return pipe
        if type(pipe).__name__ not in FAMILY_BY_INDEX_CLASS:
            raise ValueError(f"{type(pipe).__name__} is not a base pipeline of a known family")
        return cls(pipe)

    def supports(self, mode: str) -> bool:
        return mode in self.family.pipelines and (not mode.startswith("controlnet") or self.controlnet is not None)

    def pipeline_class(self, mode: str) -> type[DiffusionPipeline]:
        return self.family.pipelines[mode]

    def size_multiple(self, mode: str) -> int:
        return self.family.size_multiple(self.base, mode)

    def classifier_free(self, guidance_scale: float) -> bool:
        """Whether a call with this guidance runs the unconditional pass, as diffusers itself decides.

        Guidance-distilled denoisers (an LCM UNet's `time_cond_proj_dim`, Flux's guidance
        embedding) never do.
        """
        denoiser = getattr(self.base, "unet", None)
        distilled = denoiser is not None and getattr(denoiser.config, "time_cond_proj_dim", None) is not None
        return self.family.classifier_free and guidance_scale > 1 and not distilled

    def steps_refusal(self, steps: int) -> str | None:
        """Why the scheduler cannot take `steps` timesteps (LCM and TCD: no more than the schedule they
        were distilled on), checked once per step count on a copy; None when it can."""
        if steps not in self._steps_refusals:
            scheduler = self.base.scheduler
            try:
                type(scheduler).from_config(scheduler.config).set_timesteps(steps)
                self._steps_refusals[steps] = None
            except ValueError as e:
                self._steps_refusals[steps] = f"{type(scheduler).__name__}: {e}"[:400]
        return self._steps_refusals[steps]

    def get(self, mode: str) -> DiffusionPipeline:
        if not self.supports(mode):
            raise ValueError(f"model family '{self.family.name}' has no {mode} pipeline here")
        pipe = self._variants.get(mode)
        if pipe is None:
            extra = {"controlnet": self.controlnet} if mode.startswith("controlnet") else {}
            # from_pipe casts the shared modules to its `dtype` argument (default fp32): pass the base's.
            pipe = self.pipeline_class(mode).from_pipe(
                self.base, dtype=self.base.dtype, **self.family.init_kwargs, **extra
            )
            pipe.set_progress_bar_config(disable=True)
            self._variants[mode] = pipe
            log.debug("built %s from %s", type(pipe).__name__, type(self.base).__name__)
        if self.offload_device is not None and self._offloaded_mode != mode:
            # Offload hooks live on the shared modules and chain them in one pipeline's order;
            # re-hook when another variant (with a ControlNet in its chain, say) takes over.
            pipe.enable_model_cpu_offload(device=self.offload_device)
            self._offloaded_mode = mode
        return pipe
