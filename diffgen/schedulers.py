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


def build_scheduler(name: str, model_scheduler: SchedulerMixin) -> SchedulerMixin:
    """The scheduler `name` configured from the model's scheduler; 'default' keeps the model's own."""
    if name == "default":
        return model_scheduler
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler '{name}'. Choose from: {', '.join(SCHEDULER_NAMES)}")
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(model_scheduler.config, **overrides)
