"""The manifest: one row per prompt, read from Parquet.

Known columns are validated row by row against `ManifestRow`; any other column
(a class label, a split) passes through untouched into the index, except names
the index itself uses. Image inputs (`init_image`, `mask_image`, `control_image`,
`control_image_<name>`) are URIs of any fsspec filesystem; whether they can be read
and decoded is checked per row at generation time, where a bad one rejects only its row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from diffgen.schemas.job import CONTROL_COLUMN
from diffgen.schemas.record import GENERATED_COLUMNS

MAX_ID_LENGTH = 512


class ManifestError(ValueError):
    """A manifest that does not fit the contract; the message names columns and rows."""


class ManifestRow(BaseModel):
    """One prompt. Optional fields fall back to the job spec's values when null."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    prompt: str = Field(min_length=1, pattern=r"\S")
    negative_prompt: str | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    num_images: int = Field(default=1, ge=1, le=10_000)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=100.0)
    guidance_rescale: float | None = Field(default=None, ge=0.0, le=1.0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    width: int | None = Field(default=None, ge=8, le=8192)
    height: int | None = Field(default=None, ge=8, le=8192)
    init_image: str | None = Field(default=None, description="img2img / inpaint source image URI.")
    mask_image: str | None = Field(default=None, description="Inpainting mask URI (white = repaint); needs init_image.")
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    control_image: str | None = Field(default=None, description="The control image URI when the job has one ControlNet.")
    ip_adapter_image: str | None = Field(default=None, description="The IP-Adapter's image prompt URI.")

    @model_validator(mode="after")
    def _image_fields_need_an_init_image(self) -> ManifestRow:
        if not self.init_image:
            for name in ("mask_image", "strength"):
                if getattr(self, name) not in (None, ""):
                    raise ValueError(f"{name} is set but init_image is empty")
        return self


KNOWN_COLUMNS: tuple[str, ...] = tuple(ManifestRow.model_fields)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(n for n, f in ManifestRow.model_fields.items() if f.is_required())
_ROWS = TypeAdapter(list[ManifestRow])
_MAX_LISTED = 10

def is_text(t: pa.DataType) -> bool:
    """Every Arrow string-like type: string, large_string (Polars' default), string_view, and dictionary-encoded
    strings (categoricals)."""
    if pa.types.is_dictionary(t):
        return is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


_ARROW_KIND = {
    "id": is_text,
    "prompt": is_text,
    "negative_prompt": is_text,
    "seed": pa.types.is_integer,
    "num_images": pa.types.is_integer,
    "guidance_scale": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "guidance_rescale": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "steps": pa.types.is_integer,
    "width": pa.types.is_integer,
    "height": pa.types.is_integer,
    "init_image": is_text,
    "mask_image": is_text,
    "strength": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "control_image": is_text,
    "ip_adapter_image": is_text,
}
_FLOAT_COLUMNS = ("guidance_scale", "guidance_rescale", "strength")


def is_control_column(name: str) -> bool:
    """`control_image` or `control_image_<name>`: which ControlNet reads it is the job's business."""
    return name == CONTROL_COLUMN or name.startswith(f"{CONTROL_COLUMN}_")


def with_plain_strings(table: pa.Table) -> pa.Table:
    """The manifest with its known and control columns of any string-like type read as plain strings (the
    same values); pass-through columns stay as they are, except string_view, which Arrow cannot yet take rows of."""
    for i, field in enumerate(table.schema):
        known = field.name in _ARROW_KIND or is_control_column(field.name)
        if (known and is_text(field.type) and field.type != pa.string()) or pa.types.is_string_view(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table


def passthrough_columns(schema: pa.Schema) -> list[str]:
    """Manifest columns carried unchanged into the index."""
    return [n for n in schema.names if n not in KNOWN_COLUMNS]


def _schema_problems(schema: pa.Schema) -> list[str]:
    problems = [f"missing required column '{c}'" for c in REQUIRED_COLUMNS if c not in schema.names]
    for name in schema.names:
        if name in _ARROW_KIND and not _ARROW_KIND[name](schema.field(name).type):
            problems.append(f"column '{name}' has type {schema.field(name).type}, expected {_expected(name)}")
        elif is_control_column(name) and not is_text(schema.field(name).type):
            problems.append(f"column '{name}' has type {schema.field(name).type}, expected string (an image URI)")
        elif name in GENERATED_COLUMNS:
            problems.append(f"column '{name}' is reserved for the output index; rename it")
    if len(set(schema.names)) != len(schema.names):
        problems.append("duplicate column names")
    return problems


def _expected(name: str) -> str:
    annotation = ManifestRow.model_fields[name].annotation
    return {str: "string", int: "integer", float: "float"}.get(
        next((a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)), annotation), "?"
    )


def suspect_rows(table: pa.Table) -> pa.Array:
    """A boolean mask over `table`'s rows, computed column-wise in Arrow: true for every row `ManifestRow`
    could refuse (and some it accepts), so that pydantic validates only those, not 10 million rows one by
    one. Built from the same field metadata as the model; a constraint it does not know marks every row."""
    n = table.num_rows
    mask = pa.array(np.zeros(n, bool))

    def either(m: pa.Array) -> None:
        nonlocal mask
        mask = pc.or_(mask, pc.fill_null(m, True))

    for name, field in ManifestRow.model_fields.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        if field.is_required():
            either(column.is_null())
        if pa.types.is_floating(column.type):
            either(pc.invert(pc.fill_null(pc.is_finite(column), True)))
        for m in field.metadata:
            values = pc.utf8_length(column) if isinstance(m, MinLen | MaxLen) else column
            match m:
                case Ge(ge=v) | MinLen(min_length=v):
                    either(_compare(pc.less, values, v))
                case Gt(gt=v):
                    either(_compare(pc.less_equal, values, v))
                case Le(le=v) | MaxLen(max_length=v):
                    either(_compare(pc.greater, values, v))
                case Lt(lt=v):
                    either(_compare(pc.greater_equal, values, v))
                case _ if getattr(m, "pattern", None) == r"\S":
                    # A visible ASCII character matches \S in every regex flavour; a text without one (only
                    # spaces, or only non-ASCII letters, whose whitespace classes differ) goes to pydantic.
                    either(pc.fill_null(pc.invert(pc.match_substring_regex(column, "[!-~]")), False))
                case _:
                    either(pc.fill_null(column.is_valid(), False))  # not mirrored here: pydantic checks all
    # `ManifestRow._image_fields_need_an_init_image`
    if "init_image" in table.column_names:
        init = table.column("init_image")
        no_init = pc.fill_null(pc.equal(init, ""), True)
    else:
        no_init = pa.array(np.ones(n, bool))
    needs = pa.array(np.zeros(n, bool))
    if "mask_image" in table.column_names:
        needs = pc.or_(needs, pc.fill_null(pc.not_equal(table.column("mask_image"), ""), False))
    if "strength" in table.column_names:
        needs = pc.or_(needs, table.column("strength").is_valid())
    either(pc.and_(no_init, needs))
    return mask


def _compare(op, values: pa.ChunkedArray, bound: float) -> pa.ChunkedArray | pa.Array:
    """`op(values, bound)`, false for nulls; an integer bound beyond the column's integer type (seed < 2**63
    on int64) decides every row alike."""
    if pa.types.is_integer(values.type) and isinstance(bound, int):
        info = np.iinfo(values.type.to_pandas_dtype())
        if not info.min <= bound <= info.max:
            below = bound < info.min  # every value is above the bound
            answer = below if op in (pc.greater, pc.greater_equal) else not below
            return pa.array(np.full(len(values), answer, bool))
        return pc.fill_null(op(values, pa.scalar(bound, values.type)), False)
    return pc.fill_null(op(values, bound), False)


def row_problems(table: pa.Table) -> dict[int, list[str]]:
    """Problems per row index, for a table whose schema already fits. Pydantic validates the rows
    `suspect_rows` marks; repeated ids are found in Arrow (hash grouping), the first occurrence kept."""
    known = table.select([c for c in KNOWN_COLUMNS if c in table.column_names])
    suspects = np.flatnonzero(np.asarray(suspect_rows(known)))
    rows: list[dict[str, Any]] = known.take(pa.array(suspects, pa.int64())).to_pylist()
    for row in rows:
        for key in ("num_images",):
            if row.get(key) is None:
                row.pop(key, None)
        for key in _FLOAT_COLUMNS:
            if isinstance(row.get(key), int):
                row[key] = float(row[key])
    problems: dict[int, list[str]] = {}
    try:
        _ROWS.validate_python(rows)
    except ValidationError as err:
        for e in err.errors():
            index, *field = e["loc"]
            where = ".".join(map(str, field)) or "row"
            problems.setdefault(int(suspects[int(index)]), []).append(f"{where}: {e['msg']}")
    for i, first, rid in repeated_ids(known.column("id")):
        problems.setdefault(i, []).append(f"id: duplicate of row {first} ({rid[:60]!r})")
    problems = {i: problems[i] for i in sorted(problems)}
    return problems


def repeated_ids(ids: pa.ChunkedArray | pa.Array) -> list[tuple[int, int, str]]:
    """(row, row of the id's first occurrence, id) for every later occurrence of a repeated id, by row;
    null ids are not compared."""
    rows = pa.table({"id": ids, "_row": pa.array(np.arange(len(ids)), pa.int64())}).filter(pc.is_valid(ids))
    groups = rows.group_by("id").aggregate([("_row", "min"), ("_row", "count")])
    repeated = groups.filter(pc.greater(groups.column("_row_count"), 1))
    if not repeated.num_rows:
        return []
    first = dict(zip(repeated.column("id").to_pylist(), repeated.column("_row_min").to_pylist()))
    later = rows.filter(pc.is_in(rows.column("id"), value_set=repeated.column("id")))
    found = [(i, first[rid], rid) for rid, i in zip(later.column("id").to_pylist(), later.column("_row").to_pylist())
             if i != first[rid]]  # fmt: skip
    return sorted(found)


def check_rows(table: pa.Table, source: str, *, max_images_per_row: int | None = None) -> dict[int, list[str]]:
    """Problems per row index (including the job's cap on `num_images`).

    Problems with the manifest as a whole (missing or mistyped columns, no rows) raise
    `ManifestError`: no policy can skip past them.
    """
    problems = _schema_problems(table.schema)
    if problems:
        raise ManifestError(f"{source}: " + "; ".join(problems))
    if table.num_rows == 0:
        raise ManifestError(f"{source}: manifest has no rows")
    bad = row_problems(table)
    if max_images_per_row is not None and "num_images" in table.column_names:
        counts = table.column("num_images")
        above = np.flatnonzero(np.asarray(_compare(pc.greater, counts, max_images_per_row)))
        for i, n in zip(above.tolist(), counts.take(pa.array(above, pa.int64())).to_pylist()):
            bad.setdefault(i, []).append(f"num_images: {n} is above policy.max_images_per_row={max_images_per_row}")
        bad = {i: bad[i] for i in sorted(bad)}
    return bad


def describe_row_problems(table: pa.Table, source: str, bad: dict[int, list[str]]) -> str:
    """The first offending rows, each with its index, id and every problem."""
    listed = sorted(bad)[:_MAX_LISTED]
    lines = [f"{source}: {len(bad)} of {table.num_rows} row(s) invalid; first {len(listed)}:"]
    ids = table.column("id").to_pylist()
    for i in listed:
        lines.append(f"  row {i} (id={str(ids[i])[:60]!r}): " + "; ".join(bad[i]))
    return "\n".join(lines)


def validate_manifest(table: pa.Table, source: str, *, max_images_per_row: int | None = None) -> None:
    """Raise `ManifestError` naming the source, the columns and the first offending rows."""
    bad = check_rows(table, source, max_images_per_row=max_images_per_row)
    if bad:
        raise ManifestError(describe_row_problems(table, source, bad))
