"""Great Expectations suites at the run's two boundaries: the manifest before generation, the index after.

The suites restate the pydantic contracts as data checks a reviewer can read in the saved
results; their bounds come from the `ManifestRow` fields, not from copies of the numbers.
Each expectation carries `meta.scope`:

- `table`: the manifest or index as a whole is unusable (a required column is missing, no
  rows, the wrong number of records). No policy can skip past it.
- `row`: some rows break it. What happens to those rows is `policy.invalid_rows`' business.

Column types are not expected here: the Arrow schema states them exactly, and
`diffgen.schemas.manifest.check_rows` refuses a mistyped column. Value expectations are only added
for columns of the right kind, so a mistyped column never makes an expectation crash.
Rules across fields (`mask_image` needs `init_image`) stay with `check_rows`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import great_expectations as gx
import pyarrow as pa
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from great_expectations.expectations.row_conditions import Column

# The Arrow type each field accepts: the suite skips exactly the columns check_rows refuses.
from diffgen.schemas.manifest import _ARROW_KIND, REQUIRED_COLUMNS, ManifestRow
from diffgen.schemas.record import RecordStatus

E = gx.expectations
Scope = Literal["table", "row"]

MANIFEST_SUITE = "manifest"
INDEX_SUITE = "index"
# CLIP score is 100 * max(cos, 0) (diffgen.metrics.clip_score).
CLIP_SCORE_RANGE = (0.0, 100.0)
# Anchored with \A and \Z: `$` would also accept a trailing newline.
SHA256_REGEX = r"\A[0-9a-f]{64}\Z"


def _meta(scope: Scope) -> dict[str, Any]:
    return {"scope": scope}


def _kind(name: str) -> type:
    annotation = ManifestRow.model_fields[name].annotation
    return next(a for a in (get_args(annotation) or (annotation,)) if a is not type(None))


def _field_expectations(name: str, *, cap: int | None = None) -> list[gx.expectations.Expectation]:
    """A field's length, pattern and range constraints as expectations; nulls are left to the caller.

    GE holds range bounds as floats. An integer field's strict bound becomes the inclusive one
    next to it, so `seed < 2**63` reads `seed <= 2**63 - 1`, which a float rounds up to 2**63:
    at that edge GE lets through what `check_rows` still refuses, never the other way round.
    """
    integral = _kind(name) is int
    bounds: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    found: list[gx.expectations.Expectation] = []
    for m in ManifestRow.model_fields[name].metadata:
        match m:
            case Ge(ge=v):
                bounds["min_value"] = v
            case Gt(gt=v):
                bounds.update({"min_value": v + 1} if integral else {"min_value": v, "strict_min": True})
            case Le(le=v):
                bounds["max_value"] = v
            case Lt(lt=v):
                bounds.update({"max_value": v - 1} if integral else {"max_value": v, "strict_max": True})
            case MinLen(min_length=v):
                lengths["min_value"] = v
            case MaxLen(max_length=v):
                lengths["max_value"] = v
            case _ if getattr(m, "pattern", None):
                found.append(E.ExpectColumnValuesToMatchRegex(column=name, regex=m.pattern, meta=_meta("row")))
    if cap is not None and cap < bounds.get("max_value", cap + 1):
        bounds.pop("strict_max", None)
        bounds["max_value"] = cap
    if lengths:
        found.insert(0, E.ExpectColumnValueLengthsToBeBetween(column=name, **lengths, meta=_meta("row")))
    if bounds:
        found.append(E.ExpectColumnValuesToBeBetween(column=name, **bounds, meta=_meta("row")))
    return found


def manifest_suite(schema: pa.Schema, *, max_images_per_row: int | None = None) -> gx.ExpectationSuite:
    """What a manifest with these columns must satisfy before any model loads.

    Required columns must exist and hold no nulls; ids are unique (a repeated id is a row
    problem: `check_rows` rejects the later copies); every constrained `ManifestRow` field
    present is held to its bounds, `num_images` also to the job's `max_images_per_row`.
    """
    expectations: list[gx.expectations.Expectation] = [
        E.ExpectTableRowCountToBeBetween(min_value=1, meta=_meta("table")),
        *(E.ExpectColumnToExist(column=c, meta=_meta("table")) for c in REQUIRED_COLUMNS),
    ]
    for name in ManifestRow.model_fields:
        if name not in schema.names:
            continue
        if name in REQUIRED_COLUMNS:
            expectations.append(E.ExpectColumnValuesToNotBeNull(column=name, meta=_meta("row")))
        if name == "id":
            expectations.append(E.ExpectColumnValuesToBeUnique(column=name, meta=_meta("row")))
        if _ARROW_KIND[name](schema.field(name).type):
            cap = max_images_per_row if name == "num_images" else None
            expectations.extend(_field_expectations(name, cap=cap))
    return gx.ExpectationSuite(name=MANIFEST_SUITE, expectations=expectations)


INDEX_REQUIRED_COLUMNS: tuple[str, ...] = ("record_id", "status", "image_uri", "sha256", "clip_score")
# Added by the runner before validation: whether the row's record_id is one of the run's records.
# Computed with Arrow, because GE re-serialises an expectation's value_set for every metric it
# resolves: a value_set of every record id costs seconds per 10k ids.
EXPECTED_RECORD = "expected_record"


def index_suite(expected_records: int) -> gx.ExpectationSuite:
    """What the compacted index must satisfy after a run: one row per expected record.

    Unique record ids, as many rows as expected records and none outside them (the
    `EXPECTED_RECORD` column); statuses from `RecordStatus`; a written row names its image and
    its 64-hex sha256; CLIP scores, where QC set them, within `CLIP_SCORE_RANGE`.
    """
    written = Column("status") == RecordStatus.WRITTEN.value
    low, high = CLIP_SCORE_RANGE
    return gx.ExpectationSuite(
        name=INDEX_SUITE,
        expectations=[
            *(E.ExpectColumnToExist(column=c, meta=_meta("table")) for c in INDEX_REQUIRED_COLUMNS),
            E.ExpectTableRowCountToEqual(value=expected_records, meta=_meta("table")),
            E.ExpectColumnValuesToNotBeNull(column="record_id", meta=_meta("row")),
            E.ExpectColumnValuesToBeUnique(column="record_id", meta=_meta("row")),
            E.ExpectColumnValuesToBeInSet(column=EXPECTED_RECORD, value_set=[True], meta=_meta("row")),
            E.ExpectColumnValuesToNotBeNull(column="status", meta=_meta("row")),
            E.ExpectColumnValuesToBeInSet(
                column="status", value_set=[s.value for s in RecordStatus], meta=_meta("row")
            ),
            E.ExpectColumnValuesToNotBeNull(column="image_uri", row_condition=written, meta=_meta("row")),
            E.ExpectColumnValuesToNotBeNull(column="sha256", row_condition=written, meta=_meta("row")),
            E.ExpectColumnValuesToMatchRegex(column="sha256", regex=SHA256_REGEX, meta=_meta("row")),
            E.ExpectColumnValuesToBeBetween(column="clip_score", min_value=low, max_value=high, meta=_meta("row")),
        ],
    )


def scope(expectation_meta: dict[str, Any] | None) -> Scope:
    """An expectation's scope from its `meta`; anything unmarked counts as a row problem."""
    return "table" if (expectation_meta or {}).get("scope") == "table" else "row"
