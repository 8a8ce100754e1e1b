"""Schedulers by name, each built with `from_config` from the model's own scheduler config."""

from __future__ import annotations

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

from schemas.job import SCHEDULER_NAMES

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
    if name == "default":
        return model_scheduler
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(model_scheduler.config, **overrides)
