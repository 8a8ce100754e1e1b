import pyarrow as pa
import pytest

from diffgen.schemas.manifest import ManifestError, passthrough_columns, validate_manifest


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


def test_image_inputs_and_named_control_columns_are_string_uris():
    t = _table(
        [
            {"id": "a", "prompt": "p", "init_image": "s3://b/i.png", "mask_image": "m.png", "strength": 0.5,
             "guidance_rescale": 0.7, "control_image_edges": "e.png", "steps": 4},
        ]
    )  # fmt: skip
    validate_manifest(t, "m")
    assert passthrough_columns(t.schema) == ["control_image_edges"]
    with pytest.raises(ManifestError, match="column 'control_image_depth' has type int64, expected string"):
        validate_manifest(_table([{"id": "a", "prompt": "p", "control_image_depth": 3}]), "m")


def test_mask_and_strength_need_an_init_image():
    rows = [
        {"id": "a", "prompt": "p", "init_image": None, "mask_image": "m.png", "strength": None},
        {"id": "b", "prompt": "p", "init_image": "", "mask_image": None, "strength": 0.4},
        {"id": "c", "prompt": "p", "init_image": "i.png", "mask_image": "m.png", "strength": 0.4},
    ]
    with pytest.raises(ManifestError) as err:
        validate_manifest(_table(rows), "m")
    assert "row 0 (id='a'): row: Value error, mask_image is set but init_image is empty" in str(err.value)
    assert "row 1 (id='b'): row: Value error, strength is set but init_image is empty" in str(err.value)
    assert "row 2" not in str(err.value)


def test_generated_columns_are_reserved_but_per_row_inputs_are_not():
    with pytest.raises(ManifestError, match="'control_image_uris' is reserved"):
        validate_manifest(_table([{"id": "a", "prompt": "p", "control_image_uris": "x"}]), "m")
    validate_manifest(_table([{"id": "a", "prompt": "p", "steps": 3, "guidance_rescale": 0.5}]), "m")
