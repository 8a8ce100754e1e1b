"""The job spec: what to generate, with which model, where to write it.

Loaded from YAML; every section forbids unknown keys so a typo fails loudly
instead of being ignored. Relative local paths inside the YAML resolve against
the YAML file's folder, so a job file can be run from any working directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffgen.schemas.errors import format_validation_error
from diffgen.schemas.policy import PolicySpec
from diffgen.schemas.provenance import ProvenanceSpec
from diffgen.schemas.qc import QcSpec

SchedulerName = Literal[
    "default", "ddim", "euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "pndm", "lcm", "tcd"
]
SCHEDULER_NAMES: tuple[str, ...] = SchedulerName.__args__  # type: ignore[attr-defined]
PreprocessorName = Literal["none", "canny"]
PREPROCESSOR_NAMES: tuple[str, ...] = PreprocessorName.__args__  # type: ignore[attr-defined]
# Manifest column(s) holding control images: `control_image` with one ControlNet,
# `control_image_<name>` per ControlNet with several.
CONTROL_COLUMN = "control_image"
# Manifest column holding each row's IP-Adapter image prompt.
IP_ADAPTER_COLUMN = "ip_adapter_image"
# zlib level of written PNGs unless write.png_compress_level says otherwise (benchmarks.stage_costs measured it)
DEFAULT_PNG_COMPRESS_LEVEL = 1

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class JobSpecError(ValueError):
    """A job spec that does not fit the contract; the message lists every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    """A diffusers pipeline folder: a local path, or a hub id resolved from the local cache."""

    id: str = Field(min_length=1, description="Local folder or hub id (e.g. runwayml/stable-diffusion-v1-5).")
    revision: str | None = Field(default=None, description="Hub revision (commit or tag); ignored for local folders.")
    allow_pickle: bool = Field(
        default=False,
        description="Let components without safetensors load pickle weights (.bin/.ckpt/.pt), which can run code "
        "when read; only for a trusted source. Never enables custom code from the folder.",
    )


class SamplerSpec(_Strict):
    """Job-wide sampling defaults; a manifest row may override each of them except the scheduler."""

    scheduler: SchedulerName = "default"
    scheduler_options: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="Settings of the scheduler class's constructor applied on top of the model's scheduler config "
        "(e.g. timestep_spacing: trailing, use_karras_sigmas: true); checked against the class in the pre-flight.",
    )
    steps: int = Field(default=20, ge=1, le=1000)
    guidance_scale: float = Field(
        default=7.5, ge=0.0, le=100.0, description="<= 1 turns classifier-free guidance off (no unconditional pass)."
    )
    guidance_rescale: float = Field(
        default=0.0, ge=0.0, le=1.0, description="CFG rescale (arXiv:2305.08891 sec. 3.4); 0 is off."
    )
    negative_prompt: str = ""
    strength: float = Field(
        default=0.8, gt=0.0, le=1.0, description="img2img/inpaint: how much of the init image is re-noised."
    )
    width: int = Field(default=512, ge=8, le=8192)
    height: int = Field(default=512, ge=8, le=8192)
    allow_untrained_size: bool = Field(
        default=False,
        description="Sample at sizes other than those the model folder declares it was trained at "
        "(model_index.json `_trained_sizes`); without it such a job or row is refused.",
    )


class ControlNetSpec(_Strict):
    """One ControlNet; its images come from the manifest column `control_image` (or `control_image_<name>`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_]{0,63}$", description="Names its manifest column.")
    model: ModelSpec
    conditioning_scale: float = Field(default=1.0, ge=0.0, le=10.0)
    guidance_start: float = Field(default=0.0, ge=0.0, le=1.0, description="Fraction of steps before it applies.")
    guidance_end: float = Field(default=1.0, ge=0.0, le=1.0, description="Fraction of steps after which it stops.")
    preprocessor: PreprocessorName = "none"
    canny_low: int = Field(default=100, ge=0, le=255)
    canny_high: int = Field(default=200, ge=0, le=255)
    required: bool = Field(
        default=True,
        description="An empty control cell rejects the row; false lets such a row run without this ControlNet.",
    )

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> ControlNetSpec:
        if self.guidance_start >= self.guidance_end:
            raise ValueError(f"guidance_start ({self.guidance_start}) must be below guidance_end ({self.guidance_end})")
        if self.canny_low > self.canny_high:
            raise ValueError(f"canny_low ({self.canny_low}) must not exceed canny_high ({self.canny_high})")
        return self


class LoraSpec(_Strict):
    """A local LoRA adapter file (diffusers/kohya safetensors), applied with `weight` to every image."""

    path: str = Field(min_length=1, description="A .safetensors file; relative paths resolve against the job file.")
    weight: float = Field(default=1.0, ge=-10.0, le=10.0)
    name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Adapter name; the file stem if unset."
    )

    @field_validator("path")
    @classmethod
    def _is_safetensors(cls, v: str) -> str:
        if not v.endswith(".safetensors"):
            raise ValueError(f"expected a .safetensors file, got {v!r}")
        return v

    @property
    def adapter_name(self) -> str:
        return self.name or Path(self.path).stem


class TextualInversionSpec(_Strict):
    """A local textual-inversion embedding (safetensors) bound to the token prompts use to call it up."""

    path: str = Field(min_length=1, description="A .safetensors file; relative paths resolve against the job file.")
    token: str = Field(
        pattern=r"^\S{1,64}$", description="The word prompts use for it, conventionally in angle brackets: <cat-toy>."
    )

    @field_validator("path")
    @classmethod
    def _is_safetensors(cls, v: str) -> str:
        if not v.endswith(".safetensors"):
            raise ValueError(f"expected a .safetensors file, got {v!r}")
        return v


class IpAdapterSpec(_Strict):
    """An IP-Adapter (image prompt): its weights file, the CLIP vision encoder it was trained with, its scale.
    Its images come from the manifest column `ip_adapter_image`."""

    weights: str = Field(min_length=1, description="The adapter's .safetensors file (diffusers' IP-Adapter layout).")
    image_encoder: str = Field(min_length=1, description="A CLIPVisionModelWithProjection folder (safetensors).")
    scale: float = Field(default=1.0, ge=0.0, le=10.0, description="Weight of the image tokens; 0 is the text alone.")
    required: bool = Field(
        default=True, description="An empty ip_adapter_image cell rejects the row; false runs it at scale 0."
    )

    @field_validator("weights")
    @classmethod
    def _is_safetensors(cls, v: str) -> str:
        if not v.endswith(".safetensors"):
            raise ValueError(f"expected a .safetensors file, got {v!r}")
        return v


class ComputeSpec(_Strict):
    num_actors: int = Field(default=1, ge=1, description="Generation actors (one pipeline each).")
    gpus_per_actor: float = Field(default=0.0, ge=0.0, le=8.0, description="0 runs on the CPU.")
    cpus_per_actor: float = Field(
        default=0.0,
        ge=0.0,
        description="CPUs reserved in Ray per actor; 0 by default so actors never starve the read/write tasks.",
    )
    threads_per_actor: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op threads per CPU actor; default: the node's cores split between the actors, "
        "less one of each share (when it has more than one) for QC, encoding and writes.",
    )
    batch_size: int = Field(default=4, ge=1, le=1024)
    write_actors: int | None = Field(
        default=None,
        ge=1,
        description="Writer actors (watermark, PNG, provenance, writes), started once for the run; default: 1 "
        "when generating on the CPU, two per generation actor on GPUs.",
    )
    helper_niceness: int | None = Field(
        default=19,
        ge=0,
        le=19,
        description="Unix niceness the QC and writer actors raise theirs to (Ray starts every worker, generation "
        "actors included, at 15; it is never lowered): 19, the lowest CPU priority, lets generation take a busy "
        "node's cores first. null keeps Ray's.",
    )
    resource_wait_s: float = Field(
        default=600.0,
        ge=0,
        le=86_400,
        description="On a remote cluster that cannot hold the run's actors yet, how long to wait for (autoscaled) "
        "nodes before the run fails; a local cluster that cannot hold them is refused in pre-flight.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    # Speed and memory options; those the CPU cannot honour are skipped with a log line.
    channels_last: bool = Field(
        default=False, description="channels-last memory format for the UNet, ControlNets, VAE."
    )
    torch_compile: bool = Field(default=False, description="torch.compile the denoiser (CUDA only; slow first batch).")
    vae_slicing: bool = Field(default=False, description="Decode one image at a time: less memory, same pixels.")
    vae_tiling: bool = Field(default=False, description="Decode large images in tiles: less memory, seams possible.")
    cpu_offload: bool = Field(default=False, description="Model CPU offload: one model on the GPU at a time.")

    @model_validator(mode="after")
    def _cuda_needs_gpus(self) -> ComputeSpec:
        if self.device == "cuda" and self.gpus_per_actor == 0:
            raise ValueError("device 'cuda' needs compute.gpus_per_actor > 0")
        return self


class WebDatasetSpec(_Strict):
    """Optional WebDataset copy of the written images: tar shards of `<record_id>.png` + `<record_id>.json`."""

    enabled: bool = Field(default=False, description="Pack the written images into OUTPUT/webdataset/ after the run.")
    shard_max_bytes: int = Field(
        default=256 * 2**20,
        ge=10_240,
        description="Largest shard in bytes; shards fill in record_id order up to it. A single sample larger than "
        "this gets a shard of its own.",
    )
    min_shards: int = Field(
        default=8,
        ge=1,
        le=100_000,
        description="At least this many shards (per split) when there are as many written images, the samples "
        "spread evenly over them, so every DataLoader worker and node reads shards of its own.",
    )
    split_by: str | None = Field(
        default=None,
        min_length=1,
        description="A manifest column (e.g. split): one folder of shards per value, webdataset/<column>=<value>/. "
        "Values must be 1-64 letters, digits, '.', '_' or '-'.",
    )


class WriteSpec(_Strict):
    """How the write stage encodes and uploads each image (the pixels, and so the dataset, do not change)."""

    png_compress_level: int = Field(
        default=DEFAULT_PNG_COMPRESS_LEVEL,
        ge=0,
        le=9,
        description="zlib level of the PNG files (0 none .. 9 smallest). Lower is faster and larger; the default is "
        "the measured knee (README, 'What each stage costs').",
    )
    upload_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Images of a batch uploaded at once by each writer while it encodes the next ones; object stores "
        "such as S3 need several requests in flight to keep up with a GPU.",
    )


class JobSpec(_Strict):
    run_id: str | None = Field(default=None, description="Names the run; defaults to the job file's stem.")
    model: ModelSpec
    sampler: SamplerSpec = SamplerSpec()
    compute: ComputeSpec = ComputeSpec()
    policy: PolicySpec = PolicySpec()
    provenance: ProvenanceSpec = ProvenanceSpec()
    qc: QcSpec = QcSpec()
    webdataset: WebDatasetSpec = WebDatasetSpec()
    write: WriteSpec = WriteSpec()
    controlnets: list[ControlNetSpec] = Field(default_factory=list, max_length=8)
    loras: list[LoraSpec] = Field(default_factory=list, max_length=16)
    textual_inversions: list[TextualInversionSpec] = Field(default_factory=list, max_length=64)
    ip_adapters: list[IpAdapterSpec] = Field(
        default_factory=list, max_length=1, description="At most one for now; its images: column ip_adapter_image."
    )
    seed: int = Field(default=0, ge=0, lt=2**63)
    manifest: str | None = Field(default=None, description="Manifest Parquet URI (any fsspec URI).")
    manifest_source: str | None = Field(
        default=None,
        description="The manifest as its submitter named it, recorded in run.json and every image's provenance "
        "when the run reads a copy (`diffgen submit` ships a local manifest inside the job's package).",
    )
    output: str | None = Field(default=None, description="Output URI (any fsspec URI).")

    @field_validator("run_id")
    @classmethod
    def _run_id_is_a_safe_name(cls, v: str | None) -> str | None:
        if v is not None and not _RUN_ID.match(v):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_' or '-', starting alphanumeric")
        return v

    @model_validator(mode="after")
    def _names_are_unique(self) -> JobSpec:
        for field, names in (
            ("controlnets", [c.name for c in self.controlnets]),
            ("loras", [lora.adapter_name for lora in self.loras]),
            ("textual_inversions", [t.token for t in self.textual_inversions]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{field}: duplicate name(s) {', '.join(duplicates)}")
        return self

    def control_columns(self) -> dict[str, str]:
        """ControlNet name -> the manifest column that holds its images, in job order."""
        if len(self.controlnets) == 1:
            return {self.controlnets[0].name: CONTROL_COLUMN}
        return {c.name: f"{CONTROL_COLUMN}_{c.name}" for c in self.controlnets}

    def require_io(self) -> tuple[str, str]:
        """The manifest and output URIs, which a run cannot start without."""
        missing = [name for name in ("manifest", "output") if getattr(self, name) is None]
        if missing:
            raise JobSpecError(f"job spec: {', '.join(missing)} not set (put it in the YAML or pass --{missing[0]})")
        return self.manifest, self.output  # type: ignore[return-value]


def _resolve_relative(uri: str, base: Path) -> str:
    if "://" in uri or os.path.isabs(uri):
        return uri
    return str((base / uri).resolve())


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML scalars (so `20` is an int)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise JobSpecError(f"--set {item!r}: expected KEY=VALUE, e.g. sampler.steps=20")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise JobSpecError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return data


def load_job_spec(
    path: str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    manifest: str | None = None,
    output: str | None = None,
) -> JobSpec:
    """Read a job YAML, apply `--set` overrides and CLI URIs, and validate it.

    Every problem is reported at once, each naming its field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise JobSpecError(f"{path}: cannot read job spec ({e.strerror})") from e
    except UnicodeDecodeError as e:
        where = f"byte {e.start} is 0x{e.object[e.start]:02x}"
        raise JobSpecError(f"{path}: not a YAML job spec (not UTF-8 text: {where})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise JobSpecError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise JobSpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    base = path.resolve().parent
    for key in ("manifest", "output"):
        if isinstance(data.get(key), str):
            data[key] = _resolve_relative(data[key], base)
    models = [data.get("model")]
    controlnets = data.get("controlnets")
    if isinstance(controlnets, list):
        models += [c.get("model") for c in controlnets if isinstance(c, dict)]
    for model in models:
        if isinstance(model, dict) and isinstance(model.get("id"), str):
            candidate = model["id"]
            if candidate.startswith((".", "/")) or (base / candidate).exists():
                model["id"] = _resolve_relative(candidate, base)
    provenance = data.get("provenance")
    c2pa = provenance.get("c2pa") if isinstance(provenance, dict) else None
    for section, keys in (
        (data.get("qc"), ("clip_model", "fid_weights", "reference", "reference_stats")),
        (c2pa, ("cert_chain", "private_key")),
        (data["qc"].get("utility") if isinstance(data.get("qc"), dict) else None, ("real",)),
    ):
        if isinstance(section, dict):
            for key in keys:
                if isinstance(section.get(key), str):
                    section[key] = _resolve_relative(section[key], base)
    policy = data.get("policy")
    roots = policy.get("input_roots") if isinstance(policy, dict) else None
    if isinstance(roots, list):
        policy["input_roots"] = [_resolve_relative(r, base) if isinstance(r, str) and r else r for r in roots]
    for listed, keys in ((data.get("loras"), ("path",)), (data.get("textual_inversions"), ("path",)),
                         (data.get("ip_adapters"), ("weights", "image_encoder"))):  # fmt: skip
        for entry in listed if isinstance(listed, list) else []:
            for key in keys:
                if isinstance(entry, dict) and isinstance(entry.get(key), str):
                    entry[key] = _resolve_relative(entry[key], base)
    cwd = Path.cwd()
    if manifest is not None:
        data["manifest"] = _resolve_relative(manifest, cwd)
    if output is not None:
        data["output"] = _resolve_relative(output, cwd)
    data.setdefault("run_id", path.stem if _RUN_ID.match(path.stem) else None)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        raise JobSpecError(format_validation_error(str(path), e)) from None
