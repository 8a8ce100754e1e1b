"""Row checks at scale: `row_problems` (Arrow pre-mask, pydantic on the suspects, repeated ids by hash grouping)
says exactly what validating every row with `ManifestRow` and scanning the ids one by one says."""

import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from diffgen.schemas.manifest import _FLOAT_COLUMNS, ManifestRow, repeated_ids, row_problems, suspect_rows

TEXT = st.one_of(st.none(), st.sampled_from(["", " ", "\t\n", "\u3000", "猫", "a cat", " x ", "é" * 3]),
                 st.text(max_size=6))  # fmt: skip
IDS = st.one_of(st.none(), st.sampled_from(["", "a", "b", "a" * 512, "a" * 513, "\u3000"]))
FLOATS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, -0.0, 1.0, 100.0, 100.0001, -1e-9, 1e-300]))  # fmt: skip
INTS = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([0, 1, 7, 8, 1000, 1001, 8192, 8193, 10_000, 10_001,
                                                                  2**62, 2**63 - 1, -(2**63)]))  # fmt: skip
COLUMNS = {
    "id": (IDS, pa.string()), "prompt": (TEXT, pa.string()), "negative_prompt": (TEXT, pa.string()),
    "seed": (INTS, pa.int64()), "num_images": (INTS, pa.int64()), "guidance_scale": (FLOATS, pa.float64()),
    "guidance_rescale": (FLOATS, pa.float64()), "steps": (INTS, pa.int64()), "width": (INTS, pa.int32()),
    "height": (INTS, pa.int64()), "init_image": (TEXT, pa.string()), "mask_image": (TEXT, pa.string()),
    "strength": (FLOATS, pa.float32()), "control_image": (TEXT, pa.string()),
}  # fmt: skip


@st.composite
def tables(draw) -> pa.Table:
    names = ["id", "prompt", *draw(st.lists(st.sampled_from(list(COLUMNS)[2:]), unique=True, max_size=8))]
    n = draw(st.integers(1, 12))
    columns = {}
    for name in names:
        values = [draw(COLUMNS[name][0]) for _ in range(n)]
        if COLUMNS[name][1] == pa.float32():
            values = [v if v is None or not math.isfinite(v) or abs(v) < 3e38 else None for v in values]
        if COLUMNS[name][1] == pa.int32():
            values = [v if v is None or -(2**31) <= v < 2**31 else None for v in values]
        columns[name] = pa.array(values, COLUMNS[name][1])
    return pa.table(columns)


def reference(table: pa.Table) -> dict[int, list[str]]:
    """Every row through pydantic, ids scanned one by one: what `row_problems` must agree with."""
    problems: dict[int, list[str]] = {}
    for i, row in enumerate(table.to_pylist()):
        if row.get("num_images") is None:
            row.pop("num_images", None)
        for key in _FLOAT_COLUMNS:
            if isinstance(row.get(key), int):
                row[key] = float(row[key])
        try:
            ManifestRow.model_validate(row)
        except ValidationError as err:
            for e in err.errors():
                problems.setdefault(i, []).append(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}")
    seen: dict[str, int] = {}
    for i, rid in enumerate(table.column("id").to_pylist()):
        if rid is not None and rid in seen:
            problems.setdefault(i, []).append(f"id: duplicate of row {seen[rid]} ({rid[:60]!r})")
        elif rid is not None:
            seen[rid] = i
    return problems


@settings(max_examples=300, deadline=None)
@given(tables())
def test_row_problems_equal_validating_every_row(table):
    assert row_problems(table) == reference(table)
    refused = set(reference(table)) - {i for i, _, _ in repeated_ids(table.column("id"))}
    assert refused <= {i for i, s in enumerate(suspect_rows(table).to_pylist()) if s}


def test_plain_rows_are_not_suspects_and_repeats_name_the_first_row():
    table = pa.table({"id": ["a", "b", "a", None, "b", "a"], "prompt": ["a cat"] * 6,
                      "seed": pa.array([0, 2**63 - 1, 5, 1, 2, 3], pa.int64()),
                      "guidance_scale": [7.5, 0.0, 100.0, None, 3.0, 1.0]})  # fmt: skip
    assert suspect_rows(table).to_pylist() == [False, False, False, True, False, False]
    assert repeated_ids(table.column("id")) == [(2, 0, "a"), (4, 1, "b"), (5, 0, "a")]
    assert row_problems(table) == {2: ["id: duplicate of row 0 ('a')"], 3: ["id: Input should be a valid string"],
                                   4: ["id: duplicate of row 1 ('b')"], 5: ["id: duplicate of row 0 ('a')"]}  # fmt: skip


def test_integer_columns_of_every_width_are_checked_at_their_bounds():
    table = pa.table({"id": ["a", "b", "c"], "prompt": ["x", "y", "z"],
                      "seed": pa.array([1, 2**63, 2**64 - 1], pa.uint64()),
                      "steps": pa.array([1, 0, 100], pa.int8()), "width": pa.array([8, 7, 255], pa.uint8())})  # fmt: skip
    assert suspect_rows(table).to_pylist() == [False, True, True]
    assert row_problems(table) == reference(table)
    assert sorted(row_problems(table)) == [1, 2]
