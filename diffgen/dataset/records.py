"""Expanding manifest rows into one record per image, with stable ids and seeds.

An image depends only on (manifest id, sample index, seed, job config): never on
batching, actor or order. Both the record id and the derived seed are hashes of
the manifest id, so they survive re-ordering and re-running a manifest.
"""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from diffgen.schemas.job import IP_ADAPTER_COLUMN, JobSpec
from diffgen.schemas.manifest import ManifestError, is_control_column

_SEED_SPACE = 2**63


def record_id(row_id: str, sample_index: int) -> str:
    """24 hex characters (96 bits) naming one image of one manifest row."""
    digest = hashlib.sha256(f"{row_id}\x00{sample_index}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:24]


def attempt_record_id(slot_id: str, attempt: int) -> str:
    """Attempt 0 of a slot is the slot's own record id; a replacement (attempt >= 1) gets its own."""
    if attempt == 0:
        return slot_id
    return hashlib.sha256(f"{slot_id}\x00attempt\x00{attempt}".encode()).hexdigest()[:24]


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of a slot's attempt: the slot's seed for attempt 0, else a hash of it and the attempt number,
    so a replacement is a new image that any re-run, batching or actor makes again."""
    if attempt == 0:
        return seed
    digest = hashlib.sha256(f"{seed}\x00attempt\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_SPACE


def attempts_of(slots: pa.Table, attempt: int) -> pa.Table:
    """Attempt `attempt` of every slot in `slots` (rows of `expand`, attempt 0): its record id and seed."""
    if attempt == 0:
        return slots
    ids = [attempt_record_id(s, attempt) for s in slots.column("slot_id").to_pylist()]
    seeds = [attempt_seed(s, attempt) for s in slots.column("seed").to_pylist()]
    out = slots
    for name, values in (("record_id", pa.array(ids, pa.string())), ("seed", pa.array(seeds, pa.int64())),
                         ("attempt", pa.array([attempt] * slots.num_rows, pa.int32()))):  # fmt: skip
        out = out.set_column(out.column_names.index(name), name, values)
    return out


def derived_seed(job_seed: int, row_id: str) -> int:
    """The base seed of a row that has none: a hash of the job seed and the row id."""
    digest = hashlib.sha256(f"{job_seed}\x00{row_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_SPACE


def image_seed(base_seed: int, sample_index: int) -> int:
    """Image k of a row uses base + k, so sample 0 of a row with seed s reproduces seed s exactly."""
    return (base_seed + sample_index) % _SEED_SPACE


def _column_or(table: pa.Table, name: str, default: object, type_: pa.DataType) -> pa.Array:
    if name not in table.column_names:
        return pa.array([default] * table.num_rows, type=type_)
    return pc.fill_null(table.column(name).cast(type_), pa.scalar(default, type_)).combine_chunks()


def _uri_column(table: pa.Table, name: str, base: str | None) -> pa.Array:
    """An image URI column with empty strings as nulls (both mean "no image") and relative
    paths resolved against `base`, the manifest's folder, so a dataset folder can move whole."""
    if name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    values = table.column(name).to_pylist()
    return pa.array([_resolve(v, base) if v else None for v in values], pa.string())


def _resolve(uri: str, base: str | None) -> str:
    if base is None or "://" in uri or posixpath.isabs(uri):
        return uri
    return posixpath.join(base, uri)


def check_control_columns(columns: list[str], spec: JobSpec) -> None:
    """The manifest's control columns must match the job's ControlNets one to one (a typo must not be ignored)."""
    expected = spec.control_columns()
    problems = [
        f"column '{c}' matches no ControlNet in the job spec"
        + (f" (expected {', '.join(repr(e) for e in expected.values())})" if expected else " (it has none)")
        for c in columns
        if is_control_column(c) and c not in expected.values()
    ]
    required = {c.name for c in spec.controlnets if c.required}
    problems += [
        f"ControlNet '{name}' needs a column '{column}' (or set required: false)"
        for name, column in expected.items()
        if column not in columns and name in required
    ]
    if IP_ADAPTER_COLUMN in columns and not spec.ip_adapters:
        problems.append(f"column '{IP_ADAPTER_COLUMN}' but the job spec has no ip_adapters")
    if IP_ADAPTER_COLUMN not in columns and any(a.required for a in spec.ip_adapters):
        problems.append(f"ip_adapters.0 needs a column '{IP_ADAPTER_COLUMN}' (or set required: false)")
    if problems:
        raise ManifestError("manifest: " + "; ".join(problems))


def expand(manifest: pa.Table, spec: JobSpec) -> pa.Table:
    """One row per image (a slot, attempt 0): the manifest's columns plus `record_id`, `slot_id` (the same
    for attempt 0), `attempt`, `sample_index`, and the
    effective `seed`, `negative_prompt`, `guidance_scale`, `guidance_rescale`, `steps`, `width`,
    `height`, `init_image`, `mask_image`, `strength` (null without an init image) and `ip_adapter_image`.

    Image URIs (init, mask, control) that are relative paths resolve against the manifest's folder.
    """
    check_control_columns(manifest.column_names, spec)
    s = spec.sampler
    base = posixpath.dirname(spec.manifest) if spec.manifest else None
    counts = _column_or(manifest, "num_images", 1, pa.int64()).to_pylist()
    take = [i for i, n in enumerate(counts) for _ in range(n)]
    sample_index = [k for n in counts for k in range(n)]
    out = manifest.drop_columns([c for c in ("num_images",) if c in manifest.column_names]).take(
        pa.array(take, pa.int64())
    )
    ids = out.column("id").to_pylist()
    row_seeds = out.column("seed").to_pylist() if "seed" in out.column_names else [None] * out.num_rows
    seeds = [
        image_seed(derived_seed(spec.seed, rid) if base is None else base, k)
        for rid, base, k in zip(ids, row_seeds, sample_index)
    ]
    init_image = _uri_column(out, "init_image", base)
    strength = _column_or(out, "strength", s.strength, pa.float64())
    effective = {
        "seed": pa.array(seeds, pa.int64()),
        "negative_prompt": _column_or(out, "negative_prompt", s.negative_prompt, pa.string()),
        "guidance_scale": _column_or(out, "guidance_scale", s.guidance_scale, pa.float64()),
        "guidance_rescale": _column_or(out, "guidance_rescale", s.guidance_rescale, pa.float64()),
        "steps": _column_or(out, "steps", s.steps, pa.int32()),
        "width": _column_or(out, "width", s.width, pa.int32()),
        "height": _column_or(out, "height", s.height, pa.int32()),
        "init_image": init_image,
        "mask_image": _uri_column(out, "mask_image", base),
        "strength": pc.if_else(pc.is_null(init_image), pa.scalar(None, pa.float64()), strength),
    }
    effective.update({c: _uri_column(out, c, base) for c in spec.control_columns().values() if c in out.column_names})
    effective[IP_ADAPTER_COLUMN] = _uri_column(out, IP_ADAPTER_COLUMN, base)
    for name, values in effective.items():
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, values)
        else:
            out = out.append_column(name, values)
    out = out.append_column("sample_index", pa.array(sample_index, pa.int32()))
    slots = pa.array([record_id(r, k) for r, k in zip(ids, sample_index)], pa.string())
    out = out.append_column("slot_id", slots).append_column("attempt", pa.array([0] * out.num_rows, pa.int32()))
    return out.append_column("record_id", slots)
