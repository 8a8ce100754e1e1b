import pyarrow as pa
import pytest

from schemas.manifest import ManifestError, passthrough_columns, validate_manifest


def _table(rows, schema=None):
    return pa.Table.from_pylist(rows, schema=schema)


def test_a_good_manifest_passes_and_keeps_label_columns():
    t = _table([{"id": "a", "prompt": "a cat", "label": "cat", "num_images": 2, "seed": 3}])
    validate_manifest(t, "m.parquet")
    assert passthrough_columns(t.schema) == ["label"]


def test_missing_required_column_is_named():
    with pytest.raises(ManifestError, match=r"m\.parquet: missing required column 'prompt'"):
        validate_manifest(_table([{"id": "a"}]), "m.parquet")


def test_mistyped_column_is_named():
    with pytest.raises(ManifestError, match="column 'num_images' has type string, expected integer"):
        validate_manifest(_table([{"id": "a", "prompt": "p", "num_images": "2"}]), "m")


def test_reserved_output_column_is_refused():
    with pytest.raises(ManifestError, match="'record_id' is reserved"):
        validate_manifest(_table([{"id": "a", "prompt": "p", "record_id": "x"}]), "m")


def test_bad_rows_are_listed_by_index_id_and_field():
    rows = [
        {"id": "ok", "prompt": "fine", "num_images": 1, "width": 64},
        {"id": "empty", "prompt": "   ", "num_images": 1, "width": 64},
        {"id": "none", "prompt": None, "num_images": 1, "width": 64},
        {"id": "zero", "prompt": "p", "num_images": 0, "width": 64},
        {"id": "ok", "prompt": "dup", "num_images": 1, "width": 64},
        {"id": "tiny", "prompt": "p", "num_images": 1, "width": 4},
    ]
    with pytest.raises(ManifestError) as err:
        validate_manifest(_table(rows), "m.parquet")
    msg = str(err.value)
    assert "5 of 6 row(s) invalid" in msg
    assert "row 1 (id='empty'): prompt:" in msg
    assert "row 2 (id='none'): prompt:" in msg
    assert "row 3 (id='zero'): num_images:" in msg
    assert "row 4 (id='ok'): id: duplicate of row 0" in msg
    assert "row 5 (id='tiny'): width:" in msg
    assert "\n  row 0 " not in msg


def test_empty_manifest_is_an_error():
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string())])
    with pytest.raises(ManifestError, match="no rows"):
        validate_manifest(schema.empty_table(), "m")


def test_null_optional_fields_are_fine():
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("seed", pa.int64()), ("num_images", pa.int32())])
    validate_manifest(_table([{"id": "a", "prompt": "p", "seed": None, "num_images": None}], schema), "m")
