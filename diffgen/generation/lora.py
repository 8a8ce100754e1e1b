"""LoRA adapters: local safetensors files loaded once into a pipeline, each at its own weight.

diffusers loads them through its PEFT integration (`load_lora_weights`, `set_adapters`),
which needs the `peft` package. Every variant built from the pipeline with `from_pipe`
shares the adapted modules, so one load serves all of them.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

from diffusers import DiffusionPipeline

from diffgen.generation.weights_check import WeightsFileError, check_safetensors
from diffgen.schemas.job import LoraSpec

log = logging.getLogger(__name__)


class LoraError(ValueError):
    """A LoRA file that is missing, unreadable or does not fit the model; names the field."""


def check_loras(loras: Sequence[LoraSpec]) -> None:
    """What can be checked without loading weights: peft is installed, each file exists and its
    safetensors header is whole."""
    if loras and importlib.util.find_spec("peft") is None:
        raise LoraError("loras: loading LoRA adapters needs the 'peft' package (pip install peft)")
    for i, lora in enumerate(loras):
        if not Path(lora.path).is_file():
            raise LoraError(f"loras.{i}.path: {lora.path} is not a file")
        try:
            check_safetensors(Path(lora.path))
        except WeightsFileError as e:
            raise LoraError(f"loras.{i}.path: {e}") from None


def load_loras(pipe: DiffusionPipeline, loras: Sequence[LoraSpec]) -> None:
    """Load every adapter and activate them all at their weights (weight 0 leaves the model as it was)."""
    if not loras:
        return
    check_loras(loras)
    if not hasattr(pipe, "load_lora_weights"):
        raise LoraError(f"loras: {type(pipe).__name__} cannot load LoRA adapters")
    for i, lora in enumerate(loras):
        path = Path(lora.path)
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=lora.adapter_name)
        except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError, TypeError) as e:
            raise LoraError(f"loras.{i}.path: cannot load {path} into {type(pipe).__name__}: {e}"[:800]) from None
    pipe.set_adapters([lora.adapter_name for lora in loras], adapter_weights=[lora.weight for lora in loras])
    log.info("LoRA adapters active: %s", ", ".join(f"{lora.adapter_name}={lora.weight}" for lora in loras))
