"""Schedulers by name, each built with `from_config` from the model's own scheduler config.

A scheduler built for a model keeps every setting the model's config states. A setting the config
does not state takes the target class's library default, except where that default is known to be
wrong for latent diffusion (`LATENT_DEFAULTS`). The job's `sampler.scheduler_options` go on top,
each checked against the class's constructor (`check_scheduler_options`). Combinations known to
draw garbage are refused by name (`check_scheduler_config`) instead of silently sampling badly.

`lcm` and `tcd` are the few-step samplers of consistency-distilled models (LCM, LCM-LoRA, TCD).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

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
    "lcm": (LCMScheduler, {}),
    "tcd": (TCDScheduler, {}),
}

# Noise-prediction schedulers over the same discrete training timesteps: any one can replace another.
# diffusers lists LCM and TCD as compatible only with themselves, yet LCM-LoRA's recipe is exactly
# LCMScheduler swapped in for a base model's Euler or DDIM.
DISCRETE_TIME: frozenset[str] = frozenset(
    {e.name for e in KarrasDiffusionSchedulers} | {"LCMScheduler", "TCDScheduler"}
)

# Options a class's constructor takes but its sampling never reads: setting one would change nothing.
IGNORED_OPTIONS: dict[type[SchedulerMixin], dict[str, str]] = {
    cls: {"timestep_spacing": f"{cls.__name__} spaces its timesteps by original_inference_steps instead"}
    for cls in (LCMScheduler, TCDScheduler)
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


def effective_settings(
    name: str, config: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The settings scheduler `name` is built with from a model's scheduler `config`: latent
    defaults, then the model's stated settings, then the name's own overrides, then the job's
    `options`. 'default' is the model's own class: its stated settings and the options."""
    if name == "default":
        return {**stated_settings(config), **(options or {})}
    cls, overrides = SCHEDULERS[name]
    return {**LATENT_DEFAULTS.get(cls, {}), **stated_settings(config), **overrides, **(options or {})}


def scheduler_class(name: str, model_scheduler: type[SchedulerMixin]) -> type[SchedulerMixin]:
    """The class scheduler `name` builds: the model's own for 'default'."""
    return model_scheduler if name == "default" else SCHEDULERS[name][0]


def _refusal(cls: type[SchedulerMixin], settings: Mapping[str, Any]) -> str | None:
    """Why scheduler class `cls` with its effective `settings` is known to draw garbage, or None."""
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


def check_scheduler_config(
    name: str, config: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> None:
    """Raise if scheduler `name` built from a model's scheduler `config` (its scheduler_config.json,
    or a loaded scheduler's `.config`) with the job's `options` is a combination known to draw garbage.

    'default' without options keeps the model's own scheduler as its config states it, and is never refused.
    """
    if (name == "default" and not options) or (name != "default" and name not in SCHEDULERS):
        return
    if name == "default":
        cls = getattr(diffusers, str(config.get("_class_name")), None)
        reason = _refusal(cls, effective_settings(name, config, options)) if isinstance(cls, type) else None
        if reason:
            raise ValueError(f"sampler.scheduler_options: refused for this model: {reason}")
        return
    reason = _refusal(SCHEDULERS[name][0], effective_settings(name, config, options))
    if reason:
        usable = ["default"] + [n for n, (c, _) in SCHEDULERS.items()
                                if _refusal(c, effective_settings(n, config, options)) is None]  # fmt: skip
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
    if compatible & DISCRETE_TIME:
        compatible |= DISCRETE_TIME
    if cls.__name__ not in compatible:
        usable = ["default"] + [n for n, (c, _) in SCHEDULERS.items() if c.__name__ in compatible]
        raise ValueError(
            f"sampler.scheduler: '{name}' ({cls.__name__}) does not work with this model's "
            f"{model_scheduler.__name__}. Choose from: {', '.join(usable)}"
        )


def _scalar_types(annotation: object) -> tuple[object, ...]:
    """The scalar values an option's annotation admits: bool, int, float, str, None or Literal values."""
    if typing.get_origin(annotation) is Literal:
        return tuple(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _scalar_types(arg))
    if annotation is type(None):
        return (None,)
    return (annotation,) if annotation in (bool, int, float, str) else ()


def _admits(kinds: tuple[object, ...], value: object) -> bool:
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if kind is str and isinstance(value, str):
            return True
        if not isinstance(kind, type) and type(kind) is type(value) and kind == value:
            return True
    return False


def _describe(kinds: tuple[object, ...]) -> str:
    return " or ".join(k.__name__ if isinstance(k, type) else "null" if k is None else repr(k) for k in kinds)


def option_types(cls: type[SchedulerMixin]) -> dict[str, tuple[object, ...]]:
    """The options a job may set on `cls`: its constructor's scalar-typed parameters and what each admits."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    found = {p.name: _scalar_types(p.annotation) for p in parameters}
    ignored = IGNORED_OPTIONS.get(cls, {})
    return {n: kinds for n, kinds in found.items() if any(k is not None for k in kinds) and n not in ignored}


def check_scheduler_options(
    name: str,
    model_scheduler: type[SchedulerMixin],
    options: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    steps: int | None = None,
) -> None:
    """Raise naming every option of `sampler.scheduler_options` that scheduler `name`'s class does
    not take, or takes with another type or value. With the model's scheduler `config` and the job's
    `steps`, the scheduler is also built and its timesteps set, so what the class itself refuses
    (an unknown beta schedule, more steps than it was distilled for) is refused here."""
    if not options:
        return
    cls = scheduler_class(name, model_scheduler)
    known = option_types(cls)
    problems = []
    for key, value in options.items():
        field = f"sampler.scheduler_options.{key}"
        if key in IGNORED_OPTIONS.get(cls, {}):
            problems.append(f"{field}: {cls.__name__} takes it but never uses it ({IGNORED_OPTIONS[cls][key]})")
        elif key not in known:
            problems.append(f"{field}: not an option of {cls.__name__}. Choose from: {', '.join(sorted(known))}")
        elif not _admits(known[key], value):
            problems.append(f"{field}: {value!r} is not valid for {cls.__name__}; expected {_describe(known[key])}")
    if problems:
        raise ValueError("; ".join(problems))
    if config is None:
        return
    try:
        built = cls.from_config(effective_settings(name, config, options))
        if steps is not None:
            built.set_timesteps(steps)
    except (ValueError, NotImplementedError, TypeError, KeyError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"sampler.scheduler_options: {cls.__name__} refuses {shown}: {e}"[:600]) from None


def build_scheduler(
    name: str, model_scheduler: SchedulerMixin, options: Mapping[str, Any] | None = None
) -> SchedulerMixin:
    """The scheduler `name` configured from the model's scheduler and the job's `options`; 'default'
    without options keeps the model's own."""
    check_scheduler(name, type(model_scheduler))
    check_scheduler_options(name, type(model_scheduler), options or {})
    check_scheduler_config(name, model_scheduler.config, options)
    if name == "default" and not options:
        return model_scheduler
    cls = scheduler_class(name, type(model_scheduler))
    # Another class's settings (Euler's sigma options on LCM, say) would only be ignored, with a warning.
    takes = cls._get_init_keys(cls)
    settings = effective_settings(name, model_scheduler.config, options)
    return cls.from_config({k: v for k, v in settings.items() if k in takes or k.startswith("_")})
