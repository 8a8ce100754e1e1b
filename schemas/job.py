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

from schemas.errors import format_validation_error

SchedulerName = Literal["default", "ddim", "euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "pndm"]
SCHEDULER_NAMES: tuple[str, ...] = SchedulerName.__args__  # type: ignore[attr-defined]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class JobSpecError(ValueError):
    """A job spec that does not fit the contract; the message lists every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A diffusers pipeline folder: a local path, or a hub id resolved from the local cache."""

    id: str = Field(min_length=1, description="Local folder or hub id (e.g. runwayml/stable-diffusion-v1-5).")
    revision: str | None = Field(default=None, description="Hub revision (commit or tag); ignored for local folders.")


class SamplerSpec(_Strict):
    scheduler: SchedulerName = "default"
    steps: int = Field(default=20, ge=1, le=1000)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=100.0)
    negative_prompt: str = ""
    width: int = Field(default=512, ge=8, le=8192)
    height: int = Field(default=512, ge=8, le=8192)


class ComputeSpec(_Strict):
    num_actors: int = Field(default=1, ge=1, description="Generation actors (one pipeline each).")
    gpus_per_actor: float = Field(default=0.0, ge=0.0, le=8.0, description="0 runs on the CPU.")
    cpus_per_actor: float = Field(
        default=0.0,
        ge=0.0,
        description="CPUs reserved in Ray per actor; 0 by default so actors never starve the read/write tasks.",
    )
    threads_per_actor: int | None = Field(
        default=None, ge=1, description="torch intra-op threads per actor; default splits the node's cores."
    )
    batch_size: int = Field(default=4, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _cuda_needs_gpus(self) -> ComputeSpec:
        if self.device == "cuda" and self.gpus_per_actor == 0:
            raise ValueError("device 'cuda' needs compute.gpus_per_actor > 0")
        return self


class JobSpec(_Strict):
    run_id: str | None = Field(default=None, description="Names the run; defaults to the job file's stem.")
    model: ModelSpec
    sampler: SamplerSpec = SamplerSpec()
    compute: ComputeSpec = ComputeSpec()
    seed: int = Field(default=0, ge=0, lt=2**63)
    manifest: str | None = Field(default=None, description="Manifest Parquet URI (any fsspec URI).")
    output: str | None = Field(default=None, description="Output URI (any fsspec URI).")

    @field_validator("run_id")
    @classmethod
    def _run_id_is_a_safe_name(cls, v: str | None) -> str | None:
        if v is not None and not _RUN_ID.match(v):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_' or '-', starting alphanumeric")
        return v

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
        text = path.read_text()
    except OSError as e:
        raise JobSpecError(f"{path}: cannot read job spec ({e.strerror})") from e
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
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("id"), str):
        candidate = model["id"]
        if candidate.startswith((".", "/")) or (base / candidate).exists():
            model["id"] = _resolve_relative(candidate, base)
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
