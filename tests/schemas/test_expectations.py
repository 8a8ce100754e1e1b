"""The suites restate the pydantic contracts: bounds read from the fields, scopes that say what stops a run."""

import pyarrow as pa

from diffgen.schemas.expectations import EXPECTED_RECORD, SHA256_REGEX, index_suite, manifest_suite
from diffgen.schemas.manifest import KNOWN_COLUMNS, REQUIRED_COLUMNS
from diffgen.schemas.record import RecordStatus

_TYPES = {"seed": pa.int64(), "num_images": pa.int64(), "steps": pa.int32(), "width": pa.int32(),
          "height": pa.int32(), "guidance_scale": pa.float64(), "guidance_rescale": pa.float64(),
          "strength": pa.float32()}  # fmt: skip
FULL = pa.schema([(c, _TYPES.get(c, pa.string())) for c in KNOWN_COLUMNS] + [("label", pa.string())])


def _by_column(suite) -> dict[tuple[str, str | None], dict]:
    found = {}
    for e in suite.expectations:
        config = e.configuration
        key = (config.type, config.kwargs.get("column"))
        assert key not in found, f"{key} twice"
        found[key] = {**config.kwargs, "scope": config.meta["scope"]}
    return found


def test_manifest_bounds_come_from_the_manifest_row_fields():
    got = _by_column(manifest_suite(FULL, max_images_per_row=40))
    between = "expect_column_values_to_be_between"
    assert got[(between, "width")] | got[(between, "height")] == {
        "column": "height", "min_value": 8, "max_value": 8192, "scope": "row"
    }  # fmt: skip
    assert (got[(between, "steps")]["min_value"], got[(between, "steps")]["max_value"]) == (1, 1000)
    assert (got[(between, "guidance_scale")]["min_value"], got[(between, "guidance_scale")]["max_value"]) == (0, 100)
    assert got[(between, "guidance_rescale")]["max_value"] == 1
    assert got[(between, "strength")]["strict_min"] is True and got[(between, "strength")]["min_value"] == 0
    # an integer's strict bound becomes the inclusive one next to it (GE keeps bounds as floats)
    assert got[(between, "seed")]["max_value"] == float(2**63 - 1) and not got[(between, "seed")].get("strict_max")
    lengths = got[("expect_column_value_lengths_to_be_between", "id")]
    assert (lengths["min_value"], lengths["max_value"]) == (1, 512)
    assert got[("expect_column_values_to_match_regex", "prompt")]["regex"] == r"\S"


def test_the_job_caps_num_images_below_the_field_bound():
    between = ("expect_column_values_to_be_between", "num_images")
    assert _by_column(manifest_suite(FULL, max_images_per_row=40))[between]["max_value"] == 40
    assert _by_column(manifest_suite(FULL))[between]["max_value"] == 10_000


def test_required_columns_must_exist_have_no_nulls_and_unique_ids():
    got = _by_column(manifest_suite(FULL))
    for column in REQUIRED_COLUMNS:
        assert got[("expect_column_to_exist", column)]["scope"] == "table"
        assert got[("expect_column_values_to_not_be_null", column)]["scope"] == "row"
    # a repeated id is a row problem: check_rows rejects the later copies under "skip"
    assert got[("expect_column_values_to_be_unique", "id")]["scope"] == "row"
    assert got[("expect_table_row_count_to_be_between", None)] == {"min_value": 1, "scope": "table"}


def test_only_present_columns_of_the_right_kind_get_value_expectations():
    schema = pa.schema([("id", pa.string()), ("width", pa.string()), ("steps", pa.int64())])
    columns = {column for _, column in _by_column(manifest_suite(schema))}
    # prompt is missing: only its existence is expected; width is mistyped: check_rows names it
    assert columns == {None, "id", "prompt", "steps"}
    assert ("expect_column_to_exist", "prompt") in _by_column(manifest_suite(schema))


def test_index_suite_pins_count_statuses_and_hashes():
    got = _by_column(index_suite(2))
    assert got[("expect_table_row_count_to_equal", None)] == {"value": 2, "scope": "table"}
    assert got[("expect_column_values_to_be_unique", "record_id")]["scope"] == "row"
    assert got[("expect_column_values_to_be_in_set", EXPECTED_RECORD)]["value_set"] == [True]
    assert got[("expect_column_values_to_be_in_set", "status")]["value_set"] == [s.value for s in RecordStatus]
    assert got[("expect_column_values_to_match_regex", "sha256")]["regex"] == SHA256_REGEX
    written = got[("expect_column_values_to_not_be_null", "sha256")]["row_condition"]
    assert (written["column"]["name"], written["operator"], written["parameter"]) == ("status", "==", "written")
    clip = got[("expect_column_values_to_be_between", "clip_score")]
    assert (clip["min_value"], clip["max_value"]) == (0, 100)
