"""An output opens wherever it now lives: copied elsewhere, its index points at the copy's images."""

import json
import shutil

import pyarrow as pa
import pytest

from diffgen.dataset import storage
from diffgen.dataset.layout import image_key, index_shard
from diffgen.jobs.api import InvalidInputError, open_output
from diffgen.stages.write import WriteStage
from tests.diffgen.dataset.test_webdataset import _index
from tests.diffgen.stages.test_write import _generated, _spec


def test_a_copied_output_opens_at_its_new_place(tmp_path):
    first = tmp_path / "first"
    index = _index(str(first), written=4)
    storage.write_parquet(index, str(first / index_shard(index.column("record_id").to_pylist())))
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, moved)
    shutil.rmtree(first)

    out = open_output(str(moved))
    assert out.written.num_rows == 4 and out.index.num_rows == 6
    for row in out.written.to_pylist():
        assert row["image_uri"] == str(moved / image_key(row["record_id"])) and row["image_path"].startswith("images/")
        assert out.read_image(row["record_id"]).mode == "RGB" and row["label"] in (0, 1, 2)
    assert [r["image_uri"] for r in out.index.to_pylist() if r["status"] != "written"] == [None, None]


def test_something_that_is_no_output_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="not a diffgen output"):
        open_output(str(tmp_path))


def test_the_write_stage_records_the_path_inside_the_output(tiny_sd, tmp_path):
    spec = _spec(tiny_sd, 64)
    index = WriteStage(spec, str(tmp_path / "out"), "prov")(_generated(spec))
    for row in index.to_pylist():
        assert row["image_path"] == image_key(row["record_id"])
        assert row["image_uri"] == storage.join(str(tmp_path / "out"), row["image_path"])
    assert index.schema.field("image_path").type == pa.string()


def test_provenance_names_the_model_not_a_local_path_and_the_manifest_as_submitted(tiny_sd, tmp_path):
    from diffgen.provenance.record import read_png_provenance

    spec = _spec(tiny_sd, 64).model_copy(update={"manifest": "/tmp/_ray_pkg_1/m.parquet",
                                                  "manifest_source": "s3://b/m.parquet"})  # as `diffgen submit` runs
    index = WriteStage(spec, str(tmp_path / "out"), "prov")(_generated(spec))
    record, xmp = read_png_provenance(storage.read_bytes(index.column("image_uri")[0].as_py()))
    assert record["model_id"] == "tiny-sd" and len(record["model_weights_sha256"]) == 64
    assert record["manifest_uri"] == "s3://b/m.parquet"
    assert 'Iptc4xmpExt:AISystemUsed="tiny-sd"' in xmp and str(tiny_sd.parent) not in xmp + json.dumps(record)
