"""What determines an image, as one hash per record: resume skips only a record made from the same inputs.

A record's `fingerprint` is sha256 over two parts, both canonical JSON:

- the job's generation inputs, the same for every record (`job_inputs`): the model's weights
  hash and the hash of its JSON configs (scheduler config included), the scheduler name and
  options, each LoRA's name, weight and file sha256, each textual-inversion token and file sha256,
  each ControlNet's weights and settings, and whether the image is watermarked (the watermark
  changes pixels);
- the record's own effective inputs (`RECORD_FIELDS`): prompt, negative prompt, seed, size,
  steps, guidance, guidance rescale, strength and the URIs of its init, mask and control images.

The content of input images is not in the hash (that would mean reading every input image at
planning time); the index keeps their sha256 beside the URIs and resume compares those
(`diffgen.pipelines.plan`). Compute settings (device, dtype, batch size, actors) are not inputs: they
change how an image is made, not which image is asked for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from diffgen.generation.model_folder import model_folder, model_index
from diffgen.provenance.record import file_sha256, weights_hash
from diffgen.schemas.job import IP_ADAPTER_COLUMN, JobSpec

# The per-record inputs, as effective values after the job's defaults (`diffgen.dataset.records.expand`).
RECORD_FIELDS: tuple[str, ...] = (
    "prompt", "negative_prompt", "seed", "width", "height", "steps", "guidance_scale", "guidance_rescale",
    "strength", "init_image", "mask_image",
)  # fmt: skip


def configs_hash(folder: Path) -> str:
    """sha256 over the sorted (relative path, content) of every JSON file under a model folder."""
    outer = hashlib.sha256()
    for f in sorted(folder.rglob("*.json")):
        outer.update(f"{f.relative_to(folder).as_posix()}\x00{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return outer.hexdigest()


def _folder_inputs(folder: Path) -> dict[str, str]:
    return {"weights_sha256": weights_hash(folder), "configs_sha256": configs_hash(folder)}


def job_inputs(spec: JobSpec) -> dict[str, Any]:
    """The job's generation inputs that every record shares, as JSON types (weights read and hashed once per folder)."""
    folder, _ = model_index(spec.model)
    # Options enter only when set, so outputs made before they existed keep their fingerprints.
    options = {"scheduler_options": dict(spec.sampler.scheduler_options)} if spec.sampler.scheduler_options else {}
    embeddings = (
        {"textual_inversions": [{"token": t.token, "sha256": file_sha256(t.path)} for t in spec.textual_inversions]}
        if spec.textual_inversions
        else {}
    )
    adapters = {"ip_adapters": [{"sha256": file_sha256(a.weights), "image_encoder": weights_hash(Path(a.image_encoder)),
                                 "scale": a.scale} for a in spec.ip_adapters]} if spec.ip_adapters else {}  # fmt: skip
    return {
        "model": _folder_inputs(folder),
        "scheduler": spec.sampler.scheduler,
        **options,
        **embeddings,
        **adapters,
        "loras": [{"name": x.adapter_name, "weight": x.weight, "sha256": file_sha256(x.path)} for x in spec.loras],
        "controlnets": [
            {
                **_folder_inputs(model_folder(c.model, f"controlnets.{i}.model.id")),
                **c.model_dump(mode="json", exclude={"model", "required"}),
            }
            for i, c in enumerate(spec.controlnets)
        ],
        "watermark": spec.provenance.watermark,
    }


def job_fingerprint(inputs: dict[str, Any]) -> str:
    """The hash of `job_inputs(spec)`."""
    return _digest(inputs)


# `json.dumps` with these arguments builds a new encoder per call, half the cost of a record's digest.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _digest(value: object) -> str:
    return hashlib.sha256(_CANONICAL.encode(value).encode()).hexdigest()


def record_fingerprints(records: pa.Table, job_fp: str, control_columns: list[str]) -> pa.Array:
    """One fingerprint per record of `expand`'s table: the job's fingerprint and the record's own inputs."""
    fields = [f for f in (*RECORD_FIELDS, *control_columns) if f in records.column_names]
    columns = [records.column(f).to_pylist() for f in fields]
    return pa.array([_digest([job_fp, dict(zip(fields, values))]) for values in zip(*columns)], pa.string())


def refingerprinted(records: pa.Table, job_fp: str, control_columns: list[str]) -> pa.Table:
    """`records` with their `fingerprint` made again: an attempt's seed is its own, so is its fingerprint."""
    fingerprints = record_fingerprints(records, job_fp, control_columns)
    return records.set_column(records.column_names.index("fingerprint"), "fingerprint", fingerprints)


def fingerprinted(records: pa.Table, spec: JobSpec, job: dict[str, Any] | None = None) -> pa.Table:
    """`records` (from `diffgen.dataset.records.expand`) with their `fingerprint` column; `job` is `job_inputs(spec)`."""
    job = job_inputs(spec) if job is None else job
    fingerprints = record_fingerprints(records, job_fingerprint(job), input_columns(spec))
    return records.append_column("fingerprint", fingerprints)


def input_columns(spec: JobSpec) -> list[str]:
    """The job's own input-image columns, in a record's fingerprint beside `RECORD_FIELDS`: one per ControlNet, and
    the image prompt's with an IP-Adapter (only then, so records of jobs without one keep their fingerprints)."""
    return [*spec.control_columns().values(), *([IP_ADAPTER_COLUMN] if spec.ip_adapters else [])]
