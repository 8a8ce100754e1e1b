"""Schedulers by name, each built with `from_config` from the model's own scheduler config.

A scheduler built for a model keeps every setting the model's config states. A setting the config
does not state takes the target class's library default, except where that default is known to be
wrong for latent diffusion (`LATENT_DEFAULTS`). Combinations known to draw garbage are refused by
name (`check_scheduler_config`) instead of silently sampling badly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffgen.schemas.job import SCHEDULER_NAMES

# name -> (class, overrides applied on top of the model's scheduler config)
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": (UniPCMultistepScheduler, {}),
    "pndm": (PNDMScheduler, {}),
}

# Settings whose library default is wrong for a latent diffusion model; each applies only when the
# model's scheduler config does not state it. The values are the ones every Stable Diffusion
# checkpoint's scheduler_config.json states.
LATENT_DEFAULTS: dict[type[SchedulerMixin], dict[str, Any]] = {
    # Clipping the predicted x0 to [-1, 1] suits pixel-space DDPMs; latents range wider.
    DDIMScheduler: {"clip_sample": False},
    # Pseudo Runge-Kutta warm-up steps at half-step timesteps; diffusers' SD pipelines run PLMS only.
    PNDMScheduler: {"skip_prk_steps": True},
}


def stated_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a scheduler config states: a loaded scheduler's `.config` lists its class's
    defaults under `_use_default_values`; those were not stated by the model."""
    defaulted = set(config.get("_use_default_values", ()))
    return {k: v for k, v in config.items() if k not in defaulted and k != "_use_default_values"}


def effective_settings(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings scheduler `name` is built with from a model's scheduler `config`: latent
    defaults, then the model's stated settings, then the name's own overrides."""
    cls, overrides = SCHEDULERS[name]
    return {**LATENT_DEFAULTS.get(cls, {}), **stated_settings(config), **overrides}


def _refusal(name: str, settings: Mapping[str, Any]) -> str | None:
    """Why scheduler `name` with its effective `settings` is known to draw garbage, or None."""
    cls = SCHEDULERS[name][0]
    if not settings.get("rescale_betas_zero_snr"):
        return None
    if "rescale_betas_zero_snr" not in cls._get_init_keys(cls):
        # PNDM, the one such class, could not use it anyway: its multistep extrapolates noise
        # predictions, from which no image follows at zero terminal SNR (Lin et al. 2024, section 3).
        return (
            f"{cls.__name__} does not implement this model's zero-terminal-SNR noise schedule "
            "(rescale_betas_zero_snr: true), so it would sample on betas the model was not trained on"
        )
    if settings.get("use_karras_sigmas"):
        return (
            "Karras sigmas on this model's zero-terminal-SNR noise schedule (rescale_betas_zero_snr: true) "
            "start at sigma 4096 and spend most steps at the noisiest timesteps (999, 998, 998, 997, ...); "
            "dpmpp_2m is the same solver on the model's own timestep spacing"
        )
    return None


def check_scheduler_config(name: str, config: Mapping[str, Any]) -> None:
    """Raise if scheduler `name` built from a model's scheduler `config` (its scheduler_config.json,
    or a loaded scheduler's `.config`) is a combination known to draw garbage.

    'default' keeps the model's own scheduler as its config states it, and is never refused.
    """
    if name == "default" or name not in SCHEDULERS:
        return
    reason = _refusal(name, effective_settings(name, config))
    if reason:
        usable = ["default"] + [n for n in SCHEDULERS if _refusal(n, effective_settings(n, config)) is None]
        raise ValueError(
            f"sampler.scheduler: '{name}' is refused for this model: {reason}. Choose from: {', '.join(usable)}"
        )


def check_scheduler(name: str, model_scheduler: type[SchedulerMixin]) -> None:
    """Raise unless `name` can replace a model's `model_scheduler` class.

    diffusers lists each scheduler's compatible classes; a flow-matching model (SD3, Flux)
    has none of the table's noise-prediction schedulers among them.
    """
    if name == "default":
        return
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler '{name}'. Choose from: {', '.join(SCHEDULER_NAMES)}")
    cls = SCHEDULERS[name][0]
    compatible = {c.__name__ for c in model_scheduler._get_compatibles()}
    if cls.__name__ not in compatible:
        usable = ["default"] + [n for n, (c, _) in SCHEDULERS.items() if c.__name__ in compatible]
        raise ValueError(
            f"sampler.scheduler: '{name}' ({cls.__name__}) does not work with this model's "
            f"{model_scheduler.__name__}. Choose from: {', '.join(usable)}"
        )


def build_scheduler(name: str, model_scheduler: SchedulerMixin) -> SchedulerMixin:
    """The scheduler `name` configured from the model's scheduler; 'default' keeps the model's own."""
    check_scheduler(name, type(model_scheduler))
    check_scheduler_config(name, model_scheduler.config)
    if name == "default":
        return model_scheduler
    cls, _ = SCHEDULERS[name]
    return cls.from_config(effective_settings(name, model_scheduler.config))
