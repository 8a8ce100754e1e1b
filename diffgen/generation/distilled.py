"""Few-step distilled models and the settings they were made for.

A consistency- or adversarially-distilled model (LCM, LCM-LoRA, TCD, SDXL-Turbo, SDXL-Lightning,
Hyper-SD, DMD2, FLUX.1-schnell) samples in 1-8 steps without classifier-free guidance; run like its
base model (25 steps, guidance 7.5) it spends 5-20x the compute and draws over-saturated or burnt
images, with exit 0. Nothing in a checkpoint states this, so the evidence is what the folder holds
(an LCM or TCD scheduler config) and what the model and its LoRAs are called (`turbo`, `lightning`,
...). `distilled_warnings` says where a job departs from the recipe; it warns, never refuses: a
name is a hint, not a contract.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import diffusers

from diffgen.generation.model_folder import model_index, read_json
from diffgen.generation.schedulers import effective_settings, scheduler_class
from diffgen.schemas.job import JobSpec


@dataclass(frozen=True)
class Recipe:
    """How a kind of distilled model is meant to be sampled (from its authors' model cards)."""

    name: str
    max_steps: int
    # Above this guidance_scale a classifier-free-guidance pipeline runs an unconditional pass the
    # model was not distilled with.
    max_guidance: float
    # Job scheduler names it was distilled for; empty: the model folder's own (or any) is right.
    schedulers: tuple[str, ...] = ()
    trailing: bool = False  # needs timesteps spaced from t=999 ('trailing'), as its scheduler config states


RECIPES: dict[str, Recipe] = {
    "lcm": Recipe("LCM", max_steps=8, max_guidance=2.0, schedulers=("lcm",)),
    "tcd": Recipe("TCD", max_steps=8, max_guidance=2.0, schedulers=("tcd", "lcm")),
    "turbo": Recipe("Turbo", max_steps=4, max_guidance=1.0, trailing=True),
    "lightning": Recipe("Lightning", max_steps=8, max_guidance=1.0, trailing=True),
    "hyper": Recipe("Hyper-SD", max_steps=8, max_guidance=1.0, trailing=True),
    "dmd2": Recipe("DMD2", max_steps=4, max_guidance=1.0, schedulers=("lcm",)),
    "schnell": Recipe("FLUX.1-schnell", max_steps=4, max_guidance=1.0),
}
# Scheduler classes in a model folder that mark the model as distilled.
SCHEDULER_MARKS: dict[str, str] = {"LCMScheduler": "lcm", "TCDScheduler": "tcd"}
_NAME_MARK = re.compile(r"(?<![a-z0-9])(lcm|tcd|turbo|lightning|hyper-?sd|dmd2|schnell)(?![a-z])")


def _kind_of_name(name: str) -> str | None:
    found = _NAME_MARK.search(name.lower())
    if found is None:
        return None
    return "hyper" if found.group(1).startswith("hyper") else found.group(1)


@dataclass(frozen=True)
class Evidence:
    kind: str
    why: str  # what marks it, for the message
    from_folder: bool = False  # marked by the scheduler class in the model folder


def distillation(spec: JobSpec) -> Evidence | None:
    """Whether the job's model (or one of its LoRAs) is a known few-step distillation, and why it looks like one."""
    folder, index = model_index(spec.model)
    scheduler = (index.get("scheduler") or [None, None])[1]
    if scheduler in SCHEDULER_MARKS:
        return Evidence(SCHEDULER_MARKS[scheduler], f"model.id {folder.name}: its scheduler is {scheduler}", True)
    kind = _kind_of_name(spec.model.id)
    if kind:
        return Evidence(kind, f"model.id {spec.model.id}: the name says {RECIPES[kind].name}")
    for i, lora in enumerate(spec.loras):
        kind = _kind_of_name(Path(lora.path).name) or _kind_of_name(lora.adapter_name)
        if kind:
            return Evidence(kind, f"loras.{i} {Path(lora.path).name}: the name says {RECIPES[kind].name}-LoRA")
    return None


def _timestep_spacing(name: str, config: dict, spec: JobSpec) -> str | None:
    """The timestep spacing scheduler `name` samples with for this model and job; None if it has none."""
    model_cls = getattr(diffusers, str(config.get("_class_name")), None)
    if not isinstance(model_cls, type):
        return None
    cls = scheduler_class(name, model_cls)
    stated = effective_settings(name, config, spec.sampler.scheduler_options).get("timestep_spacing")
    parameter = inspect.signature(cls.__init__).parameters.get("timestep_spacing")
    return stated or (parameter.default if parameter is not None else None)


def _guidance_embedding(folder: Path) -> bool:
    """An LCM-distilled UNet takes guidance as an embedding (`time_cond_proj_dim`) and never runs CFG."""
    config = folder / "unet" / "config.json"
    return config.is_file() and read_json(config, "model.id", "UNet").get("time_cond_proj_dim") is not None


def _counted(pairs: Iterable[float | int], bad) -> str | None:
    counts = Counter(v for v in pairs if bad(v))
    if not counts:
        return None
    return ", ".join(f"{n} image(s) at {v}" for v, n in sorted(counts.items()))


def distilled_warnings(spec: JobSpec, steps: Iterable[int], guidance: Iterable[float]) -> list[str]:
    """What a job running a distilled model asks for that the model was not made for: more steps than
    it was distilled for, classifier-free guidance, another scheduler or timestep spacing. `steps` and
    `guidance` are the records' effective values (manifest rows may override the job's)."""
    evidence = distillation(spec)
    if evidence is None:
        return []
    recipe = RECIPES[evidence.kind]
    found = f"{evidence.why} ({recipe.name}-distilled), made for"
    warnings = []
    many = _counted(steps, lambda s: s > recipe.max_steps)
    if many:
        warnings.append(f"{found} at most {recipe.max_steps} steps; {many}")
    folder, index = model_index(spec.model)
    if not _guidance_embedding(folder) and "Flux" not in str(index.get("_class_name")):
        strong = _counted(guidance, lambda g: g > recipe.max_guidance)
        if strong:
            warnings.append(
                f"{found} guidance_scale <= {recipe.max_guidance:g} (no unconditional pass); {strong}, "
                "which runs classifier-free guidance it was not distilled with"
            )
    name = spec.sampler.scheduler
    own = name == "default" and evidence.from_folder  # the folder's LCM/TCD scheduler
    if recipe.schedulers and name not in recipe.schedulers and not own:
        warnings.append(f"{found} the {' or '.join(recipe.schedulers)} scheduler; sampler.scheduler is {name}")
    config_file = folder / "scheduler" / "scheduler_config.json"
    if recipe.trailing and config_file.is_file():
        spacing = _timestep_spacing(name, read_json(config_file, "model.id", "scheduler"), spec)
        if spacing is not None and spacing != "trailing":
            warnings.append(
                f"{found} trailing timestep spacing; this job's scheduler spaces them {spacing!r} "
                "(set sampler.scheduler_options.timestep_spacing: trailing)"
            )
    return warnings
