"""Loading a diffusers pipeline from a local folder (or the local hub cache), never the network.

The model family, and with it every pipeline class, comes from the folder's own
`model_index.json` (see `diffgen.generation.families`). Weights load from safetensors only, unless
the job sets `model.allow_pickle` for a component that has nothing but pickle weights.
Custom code shipped in a model folder is never run: `trust_remote_code` is never passed.
ControlNets and LoRA adapters load once per actor next to the base pipeline.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from safetensors import SafetensorError
from transformers import PreTrainedModel
from transformers.utils import logging as transformers_logging

from diffgen.generation.families import FAMILIES, FAMILY_BY_INDEX_CLASS, Family, UnknownFamilyError, family_for
from diffgen.generation.ip_adapter import IpAdapterError, check_ip_adapters, load_ip_adapters
from diffgen.generation.lora import LoraError, check_loras, load_loras
from diffgen.generation.model_folder import ModelLoadError, model_folder, model_index, read_json
from diffgen.generation.schedulers import check_scheduler, check_scheduler_config, check_scheduler_options
from diffgen.generation.textual_inversion import (
    TextualInversionError,
    check_textual_inversions,
    load_textual_inversions,
)
from diffgen.generation.variants import PipelineSet
from diffgen.generation.weights_check import WeightsFileError, check_weights
from diffgen.schemas.job import ComputeSpec, ControlNetSpec, JobSpec, ModelSpec

log = logging.getLogger(__name__)

# model_index.json `_class_name` -> the text-to-image pipeline class that runs it.
PIPELINES: dict[str, type[DiffusionPipeline]] = {
    name: FAMILIES[family].pipelines["text2img"] for name, family in FAMILY_BY_INDEX_CLASS.items()
}

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# What `from_pretrained` raises for a folder whose files are well-formed but wrong for the model (shapes,
# missing tensors: NotImplementedError "Cannot copy out of meta tensor", configs its class refuses).
_LOAD_ERRORS = (OSError, ValueError, SafetensorError, RuntimeError, NotImplementedError, KeyError, TypeError)

# Weight files that torch unpickles: reading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
# Where model_index.json components may come from; any other library name is custom code.
COMPONENT_LIBRARIES = ("diffusers", "transformers")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def trained_sizes(index: dict) -> tuple[tuple[int, int], ...] | None:
    """The (width, height) sizes a model folder declares it was trained at (model_index.json's
    `_trained_sizes`, which diffusers ignores like every key starting with `_`); None when it says
    nothing, as downloaded checkpoints do."""
    sizes = index.get("_trained_sizes")
    return tuple((int(w), int(h)) for w, h in sizes) if sizes else None


def size_refusal(sizes: tuple[tuple[int, int], ...] | None, width: int, height: int) -> str | None:
    """Why a model with these trained sizes refuses width x height; None when it samples it."""
    if sizes is None or (width, height) in sizes:
        return None
    listed = ", ".join(f"{w}x{h}" for w, h in sizes)
    return (
        f"width, height: {width}x{height} is not a size this model was trained at (supported: {listed}); "
        "set sampler.allow_untrained_size: true to sample it anyway"
    )


def _components(folder: Path, index: dict) -> dict[str, tuple[str, str]]:
    """model_index.json's components that load from a subfolder: name -> (library, class)."""
    return {
        name: (value[0], value[1])
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
    }


def _check_no_custom_code(folder: Path, index: dict) -> None:
    pipelines_dir = Path(diffusers.__file__).parent / "pipelines"
    for name, (library, cls) in _components(folder, index).items():
        builtin = library in COMPONENT_LIBRARIES or (library.isidentifier() and (pipelines_dir / library).is_dir())
        if not builtin:
            raise ModelLoadError(
                f"model.id: {folder}/model_index.json declares component '{name}' as [{library!r}, {cls!r}], "
                f"custom code that diffgen never runs; components must come from {', '.join(COMPONENT_LIBRARIES)}"
            )


def _pickle_only(folder: Path) -> list[Path]:
    """A component folder's pickle weight files when it has no safetensors to load instead."""
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if any(p.name.endswith(".safetensors") for p in files):
        return []
    return [p for p in files if p.suffix in PICKLE_SUFFIXES]


def use_safetensors(model: ModelSpec, root: Path, folders: list[Path], field: str) -> bool | None:
    """diffusers' `use_safetensors` for this model: True (safetensors only) unless `allow_pickle` is set.

    Refuses a model with a component that holds only pickle weights, naming the files and the
    field that allows them; with the field set, loads them with a warning.
    """
    pickled = [str(p.relative_to(root)) for folder in folders for p in _pickle_only(folder)]
    switch = field.removesuffix(".id") + ".allow_pickle"
    if pickled and not model.allow_pickle:
        shown = ", ".join(pickled[:6]) + (f" and {len(pickled) - 6} more" if len(pickled) > 6 else "")
        raise ModelLoadError(
            f"{field}: {root} has pickle weights with no safetensors beside them ({shown}); loading pickle can "
            f"run code. Convert them to safetensors, or set {switch}: true if you trust their source"
        )
    if pickled:
        log.warning("%s: loading pickle weights %s from %s (%s is true)", field, ", ".join(pickled), root, switch)
    return None if model.allow_pickle else True


def model_family(index: dict, folder: Path | None = None) -> Family:
    try:
        return family_for(index.get("_class_name", ""))
    except UnknownFamilyError as e:
        raise ModelLoadError(str(e) if folder is None else f"model.id: {folder}: {e}") from None


def pipeline_class(index: dict) -> type[DiffusionPipeline]:
    return model_family(index).pipelines["text2img"]


def _controlnet_class(spec: ControlNetSpec, i: int, family: Family) -> tuple[Path, type]:
    field = f"controlnets.{i}.model.id"
    folder = model_folder(spec.model, field)
    name = read_json(folder / "config.json", field, "ControlNet").get("_class_name", "")
    if not isinstance(name, str):
        raise ModelLoadError(
            f"{field}: {folder}/config.json's _class_name is {name!r}, not a class name; "
            f"a {family.name} model takes {', '.join(family.controlnets)}"
        )
    if name not in family.controlnets:
        raise ModelLoadError(
            f"{field}: {folder} holds a '{name}', but a {family.name} model takes {', '.join(family.controlnets)}"
        )
    return folder, family.controlnets[name]


def _check_weights(folder: Path, library: str, model: ModelSpec, field: str, explicit: str | None = None) -> None:
    try:
        check_weights(folder, library, allow_pickle=model.allow_pickle, explicit=explicit)
    except WeightsFileError as e:
        raise ModelLoadError(f"{field}: {e}") from None


def _component_class(folder: Path, name: str, value: object) -> type:
    """The class a model_index.json entry names, looked up as diffusers does (custom code is refused before)."""
    declared = f"model.id: {folder}/model_index.json declares component '{name}' as {value!r}"
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ModelLoadError(f"{declared}; a component is a [library, class] pair of names")
    library, name_of_class = value
    module = importlib.import_module(library if library in COMPONENT_LIBRARIES else f"diffusers.pipelines.{library}")
    cls = getattr(module, name_of_class, None)
    if not isinstance(cls, type):
        raise ModelLoadError(f"{declared}, but {module.__name__} has no class '{name_of_class}'")
    return cls


def _check_components(folder: Path, index: dict, family: Family, model: ModelSpec) -> None:
    """What `from_pretrained` would refuse only while loading: a required component missing, a class that
    does not resolve, and for each model component its config and the weights files it loads."""
    pipeline = family.pipelines["text2img"]
    expected, _ = pipeline._get_signature_keys(pipeline)
    absent = [n for n in expected if n not in index or (isinstance(index[n], list) and index[n][:1] == [None])]
    missing = [n for n in absent if n not in pipeline._optional_components]
    if missing:
        raise ModelLoadError(
            f"model.id: {folder}/model_index.json has no {', '.join(missing)}, which a {family.name} model needs"
        )
    for name in sorted(set(expected) - set(absent)):
        cls = _component_class(folder, name, index[name])
        if not issubclass(cls, (diffusers.ModelMixin, PreTrainedModel)):
            continue  # a scheduler, tokenizer or image processor: no weights
        library = "diffusers" if issubclass(cls, diffusers.ModelMixin) else "transformers"
        config = read_json(folder / name / "config.json", "model.id", cls.__name__)
        if library == "diffusers" and not isinstance(config.get("_class_name", ""), str | list):
            raise ModelLoadError(
                f"model.id: {folder / name}/config.json's _class_name is {config['_class_name']!r}, not a class name"
            )
        explicit = config.get("transformers_weights") if library == "transformers" else None
        _check_weights(folder / name, library, model, "model.id", explicit if isinstance(explicit, str) else None)


def preflight(spec: JobSpec) -> Family:
    """Everything about the job's models checkable without loading weights; raises `ModelLoadError`.

    The family, every component's class, the scheduler's fit, the ControlNets' classes, and the
    header of every weights file that will load (base components, ControlNets, LoRAs, embeddings): a bad job
    fails here, on the driver, before any actor starts.
    """
    return _preflight(spec)[0]


def _preflight(spec: JobSpec) -> tuple[Family, dict]:
    """`preflight`, and the model_index.json it read."""
    folder, index = model_index(spec.model)
    family = model_family(index, folder)
    _check_no_custom_code(folder, index)
    if not spec.sampler.allow_untrained_size:
        refusal = size_refusal(trained_sizes(index), spec.sampler.width, spec.sampler.height)
        if refusal:
            raise ModelLoadError(f"sampler.{refusal}")
    use_safetensors(spec.model, folder, [folder / name for name in _components(folder, index)], "model.id")
    _check_components(folder, index, family, spec.model)
    scheduler_name = (index.get("scheduler") or [None, None])[1]
    scheduler_cls = getattr(diffusers, scheduler_name or "", None)
    if scheduler_cls is not None:
        try:
            sampler = spec.sampler
            check_scheduler(sampler.scheduler, scheduler_cls)
            check_scheduler_options(sampler.scheduler, scheduler_cls, sampler.scheduler_options)
            if sampler.scheduler != "default" or sampler.scheduler_options:
                scheduler_config = read_json(folder / "scheduler" / "scheduler_config.json", "model.id", "scheduler")
                check_scheduler_config(sampler.scheduler, scheduler_config, sampler.scheduler_options)
                check_scheduler_options(
                    sampler.scheduler, scheduler_cls, sampler.scheduler_options, scheduler_config, sampler.steps
                )
        except ValueError as e:
            raise ModelLoadError(str(e)) from None
    for i, controlnet in enumerate(spec.controlnets):
        field = f"controlnets.{i}.model.id"
        controlnet_folder, _ = _controlnet_class(controlnet, i, family)
        use_safetensors(controlnet.model, controlnet_folder, [controlnet_folder], field)
        _check_weights(controlnet_folder, "diffusers", controlnet.model, field)
    try:
        check_loras(spec.loras)
        check_textual_inversions(spec.textual_inversions, family.name, folder)
        check_ip_adapters(spec.ip_adapters, family.name)
    except (LoraError, TextualInversionError, IpAdapterError) as e:
        raise ModelLoadError(str(e)) from None
    return family, index


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


def _quiet() -> None:
    # Loading bars are noise in a batch job's logs; the pipeline's own run reports progress.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_pipeline(model: ModelSpec, where: Placement, *, to_device: bool = True) -> DiffusionPipeline:
    """Load the base pipeline once (per actor) onto its device, in eval mode, with SDPA attention."""
    _quiet()
    folder, index = model_index(model)
    family = model_family(index)
    cls = family.pipelines["text2img"]
    safetensors_only = use_safetensors(
        model, folder, [folder / name for name in _components(folder, index)], "model.id"
    )
    try:
        pipe = cls.from_pretrained(
            str(folder),
            dtype=where.dtype,
            use_safetensors=safetensors_only,
            local_files_only=True,
            **family.init_kwargs,
        )
    except _LOAD_ERRORS as e:
        raise ModelLoadError(f"model.id: cannot load {folder}: {e}") from None
    if to_device:
        pipe = pipe.to(where.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_controlnet(spec: ControlNetSpec, i: int, family: Family, where: Placement) -> torch.nn.Module:
    _quiet()
    folder, cls = _controlnet_class(spec, i, family)
    safetensors_only = use_safetensors(spec.model, folder, [folder], f"controlnets.{i}.model.id")
    try:
        model = cls.from_pretrained(
            str(folder), dtype=where.dtype, use_safetensors=safetensors_only, local_files_only=True
        )
    except _LOAD_ERRORS as e:
        raise ModelLoadError(f"controlnets.{i}.model.id: cannot load {folder}: {e}") from None
    return model.eval()


def _denoiser(pipe: DiffusionPipeline) -> torch.nn.Module:
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def apply_compute_options(
    pipe: DiffusionPipeline, controlnets: list[torch.nn.Module], compute: ComputeSpec, where: Placement
) -> None:
    """The speed and memory options of `compute`; the CPU skips what it cannot use, with a log line."""
    cuda = where.device.type == "cuda"
    if compute.channels_last:
        # A layout for 4-D conv weights and activations; a transformer's linear layers are unaffected.
        for module in [pipe.vae, getattr(pipe, "unet", None), *controlnets]:
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if compute.vae_slicing:
        pipe.vae.enable_slicing()
    if compute.vae_tiling:
        pipe.vae.enable_tiling()
    if compute.torch_compile:
        if cuda:
            # Compiled in place, so the module keeps its class and `from_pipe` variants share it.
            _denoiser(pipe).compile(fullgraph=False, dynamic=False)
        else:
            log.warning("compute.torch_compile: skipped on the CPU (compiling per shape costs more than it saves)")
    if compute.cpu_offload and not cuda:
        log.warning("compute.cpu_offload: nothing to offload to on the CPU; skipped")


def load_pipeline_set(spec: JobSpec, where: Placement) -> PipelineSet:
    """The base pipeline with its scheduler, LoRAs, ControlNets and compute options, ready to sample."""
    from diffgen.generation.schedulers import build_scheduler

    family, index = _preflight(spec)
    offload = spec.compute.cpu_offload and where.device.type == "cuda"
    pipe = load_pipeline(spec.model, where, to_device=not offload)
    pipe.scheduler = build_scheduler(spec.sampler.scheduler, pipe.scheduler, spec.sampler.scheduler_options)
    try:
        load_loras(pipe, spec.loras)
        load_textual_inversions(pipe, spec.textual_inversions)
        load_ip_adapters(pipe, spec.ip_adapters)
    except (LoraError, TextualInversionError, IpAdapterError) as e:
        raise ModelLoadError(str(e)) from None
    controlnets = [load_controlnet(c, i, family, where) for i, c in enumerate(spec.controlnets)]
    if not offload:
        controlnets = [c.to(where.device) for c in controlnets]
    apply_compute_options(pipe, controlnets, spec.compute, where)
    pipes = PipelineSet(
        pipe, family, list(zip(spec.controlnets, controlnets)), offload_device=where.device if offload else None
    )
    pipes.ip_adapter_specs = list(spec.ip_adapters)
    if not spec.sampler.allow_untrained_size:
        pipes.trained_sizes = trained_sizes(index)
    return pipes
