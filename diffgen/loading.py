"""Loading a diffusers pipeline from a local folder (or the local hub cache), never the network.

The pipeline class comes from the folder's own `model_index.json`; weights load
from safetensors only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from schemas.job import ComputeSpec, ModelSpec

log = logging.getLogger(__name__)

# model_index.json `_class_name` -> the text-to-image pipeline class that runs it.
PIPELINES: dict[str, type[DiffusionPipeline]] = {
    "StableDiffusionPipeline": StableDiffusionPipeline,
}

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelLoadError(RuntimeError):
    """The model folder is missing, unreadable or of a kind diffgen cannot run."""


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def model_index(model: ModelSpec) -> tuple[Path, dict]:
    """The model's folder and its parsed model_index.json, from disk or the local hub cache only."""
    folder = Path(model.id)
    if not folder.is_dir():
        if model.id.startswith((".", "/", "~")) or model.id.count("/") != 1:
            raise ModelLoadError(f"model.id: folder {model.id} does not exist")
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(model.id, revision=model.revision, local_files_only=True))
        except Exception as e:  # the hub client raises several unrelated types for "not cached"
            raise ModelLoadError(
                f"model.id: '{model.id}' is neither a local folder nor in the local hub cache "
                f"(downloads are off; fetch it ahead of time): {type(e).__name__}"
            ) from None
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(f"model.id: {folder} has no model_index.json; is it a diffusers pipeline folder?")
    try:
        return folder, json.loads(index_file.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"model.id: {index_file} is not valid JSON: {e}") from None


def pipeline_class(index: dict) -> type[DiffusionPipeline]:
    name = index.get("_class_name", "")
    if name not in PIPELINES:
        raise ModelLoadError(f"Unknown pipeline class '{name}' in model_index.json. Choose from: {', '.join(PIPELINES)}")
    return PIPELINES[name]


def placement(compute: ComputeSpec, cuda_available: bool | None = None) -> Placement:
    """Where an actor runs: CUDA when asked for (or 'auto' with a GPU), else the CPU.

    Options the CPU cannot honour degrade with a log line instead of failing.
    """
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    want_cuda = compute.device == "cuda" or (compute.device == "auto" and compute.gpus_per_actor > 0)
    if want_cuda and not cuda:
        log.warning("CUDA requested but not available; running on the CPU")
    device = torch.device("cuda" if want_cuda and cuda else "cpu")
    dtype = DTYPES[compute.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        log.warning("fp16 is not supported for CPU inference; using fp32")
        dtype = torch.float32
    return Placement(device, dtype)


def load_pipeline(model: ModelSpec, where: Placement) -> DiffusionPipeline:
    """Load the pipeline once (per actor) onto its device, in eval mode, with SDPA attention."""
    # Loading bars are noise in a batch job's logs; the pipeline's own run reports progress.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    folder, index = model_index(model)
    cls = pipeline_class(index)
    try:
        pipe = cls.from_pretrained(
            str(folder),
            dtype=where.dtype,
            use_safetensors=True,
            local_files_only=True,
        )
    except (OSError, ValueError, EnvironmentError) as e:
        raise ModelLoadError(f"model.id: cannot load {folder}: {e}") from None
    pipe = pipe.to(where.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
