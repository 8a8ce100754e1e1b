"""The generate and write stages called directly on small Arrow tables, without Ray."""

import hashlib
import json

import pyarrow as pa
import pytest

from diffgen.dataset import storage
from diffgen.dataset.fingerprint import fingerprinted
from diffgen.dataset.records import expand
from diffgen.provenance.png import decode_png
from diffgen.provenance.record import PROVENANCE_KEY
import numpy as np

from diffgen.schemas.job import JobSpec, LoraSpec, WriteSpec
from diffgen.schemas.record import INDEX_COLUMNS
from diffgen.stages.chain import check_chain
from diffgen.stages.generate import GenerateStage
from diffgen.stages.qc import QcStage
from diffgen.stages.write import WriteStage


@pytest.fixture(scope="module")
def spec(tiny_sd):
    return JobSpec.model_validate(
        {
            "run_id": "unit",
            "model": {"id": str(tiny_sd)},
            "sampler": {"steps": 3, "guidance_scale": 2.0, "width": 32, "height": 32, "scheduler": "ddim"},
            "compute": {"batch_size": 2},
            "provenance": {"allow_unwatermarked": True},  # 32 px is below the watermark's 64
        }
    )


@pytest.fixture(scope="module")
def records(spec):
    manifest = pa.Table.from_pylist(
        [
            {"id": "a", "prompt": "a red square", "num_images": 2, "width": None, "label": "square"},
            {"id": "b", "prompt": "a blue circle", "num_images": 1, "width": 34, "label": "circle"},
        ]
    )
    return fingerprinted(expand(manifest, spec), spec)


@pytest.fixture(scope="module")
def generated(spec, records):
    stage = GenerateStage(spec)
    stage.setup()
    return stage(records)


def test_the_chain_checks_columns_before_any_model_loads(spec, records, tmp_path):
    stages = [GenerateStage(spec), QcStage(spec.qc), WriteStage(spec, str(tmp_path), "unit")]
    assert set(INDEX_COLUMNS) <= set(check_chain(records.column_names, stages))
    without_qc = set(check_chain(records.column_names, [stages[0], stages[2]]))
    assert set(INDEX_COLUMNS) - without_qc == {"clip_score", "clip_truncated", "pixel_std", "phash", "qc_reasons"}
    with pytest.raises(ValueError, match="GenerateStage reads \\['seed'\\]"):
        check_chain([c for c in records.column_names if c != "seed"], stages)


def test_generate_adds_pixels_or_a_per_row_error(generated):
    assert generated.column("status").to_pylist() == [None, None, "rejected"]  # 34 is not a multiple of 8
    assert "divisible by" in generated.column("error")[2].as_py()
    assert len(generated.column("pixels")[0].as_py()) == 32 * 32 * 3


def test_write_commits_images_then_an_index_shard(spec, generated, tmp_path):
    index = WriteStage(spec, str(tmp_path), "unit")(generated)
    rows = index.to_pylist()
    assert [r["status"] for r in rows] == ["written", "written", "rejected"]
    assert rows[2]["image_uri"] is None and rows[2]["sha256"] is None
    assert [r["label"] for r in rows] == ["square", "square", "circle"]
    for row in rows[:2]:
        data = storage.read_bytes(row["image_uri"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        pixels, text = decode_png(data)
        assert pixels.shape == (32, 32, 3)
        provenance = json.loads(text[PROVENANCE_KEY])
        assert provenance["record_id"] == row["record_id"] and provenance["seed"] == row["seed"]
        assert row["image_uri"].startswith(str(tmp_path) + "/images/")
    shards = storage.list_files(str(tmp_path / "index"), ".parquet")
    assert len(shards) == 1
    assert storage.read_parquet(shards[0]).equals(index)


def test_png_level_and_upload_concurrency_change_the_bytes_never_the_pixels(spec, generated, tmp_path):
    found = {}
    for level, concurrency in ((0, 1), (9, 4)):
        job = spec.model_copy(update={"write": WriteSpec(png_compress_level=level, upload_concurrency=concurrency)})
        index = WriteStage(job, str(tmp_path / f"level{level}"), "unit")(generated)
        found[level] = {}
        for row in index.to_pylist():
            if row["status"] != "written":
                continue
            data = storage.read_bytes(row["image_uri"])
            assert hashlib.sha256(data).hexdigest() == row["sha256"]  # stored before the index names it
            found[level][row["record_id"]] = (len(data), decode_png(data)[0])
    assert found[0].keys() == found[9].keys() and len(found[0]) == 2
    for record_id, (size, pixels) in found[0].items():
        assert np.array_equal(pixels, found[9][record_id][1])
        assert size > found[9][record_id][0]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_failed_upload_fails_the_batch_before_its_index_shard(spec, generated, tmp_path, concurrency):
    (tmp_path / "images").write_text("a file where the images folder should be")
    job = spec.model_copy(update={"write": WriteSpec(upload_concurrency=concurrency)})
    with pytest.raises(OSError):
        WriteStage(job, str(tmp_path), "unit")(generated)
    assert not (tmp_path / "index").exists()


def test_a_retried_batch_overwrites_its_own_files(spec, generated, tmp_path):
    writer = WriteStage(spec, str(tmp_path), "unit")
    writer(generated)
    writer(generated)
    assert len(storage.list_files(str(tmp_path / "index"), ".parquet")) == 1
    assert len(list((tmp_path / "images").rglob("*.png"))) == 2


def _fault(stage, failures: int):
    """A forward pre-hook on the real UNet that raises for its first `failures` calls."""
    calls = {"n": 0}

    def hook(module, args):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise RuntimeError("injected device fault")

    return stage.pipes.base.unet.register_forward_pre_hook(hook)


def test_a_failed_image_is_retried_alone_and_comes_out_the_same(spec, records):
    stage = GenerateStage(spec)
    stage.setup()
    clean = stage(records.slice(0, 2))
    handle = _fault(stage, failures=1)  # the batch call fails; each image's retry succeeds
    try:
        retried = stage(records.slice(0, 2))
    finally:
        handle.remove()
    assert retried.column("status").to_pylist() == [None, None]
    assert retried.column("pixels").to_pylist() == clean.column("pixels").to_pylist()


def test_retries_are_bounded_then_the_image_fails_with_its_error(spec, records):
    stage = GenerateStage(spec.model_copy(update={"policy": spec.policy.model_copy(update={"row_retries": 2})}))
    stage.setup()
    handle = _fault(stage, failures=10**6)
    try:
        out = stage(records.slice(0, 1))
    finally:
        handle.remove()
    assert out.column("status").to_pylist() == ["failed"]
    assert "injected device fault" in out.column("error")[0].as_py()
    assert out.column("error")[0].as_py().endswith("(after 3 attempts)")


def test_loras_and_their_file_hashes_are_in_every_provenance_record_and_the_index(
    spec, generated, tiny_sd, tiny_lora, tmp_path
):
    from diffgen.provenance.record import weights_hash

    lora = tiny_lora
    with_lora = spec.model_copy(update={"loras": [LoraSpec(path=str(lora), weight=0.7)]})
    index = WriteStage(with_lora, str(tmp_path / "out"), "unit")(generated)
    sha = hashlib.sha256(lora.read_bytes()).hexdigest()
    expected = {"name": "style", "path": str(lora), "weight": 0.7, "sha256": sha}
    for row in index.to_pylist():
        assert row["loras"] == [expected]
        assert row["model_weights_sha256"] == weights_hash(tiny_sd)
        if row["status"] == "written":
            provenance = json.loads(decode_png(storage.read_bytes(row["image_uri"]))[1][PROVENANCE_KEY])
            assert provenance["loras"] == [expected]
            assert provenance["model_weights_sha256"] == weights_hash(tiny_sd)


def test_a_stage_may_add_only_declared_columns(spec, records, tmp_path):
    """A column no schema declares would pass into the index like a manifest column (and could overwrite
    a user's column of that name): the chain refuses it before any model loads."""

    class Leaky(QcStage):
        adds = (*QcStage.adds, "clip_debug")

    with pytest.raises(ValueError, match=r"stage Leaky adds \['clip_debug'\], which the index schema does not declare"):
        check_chain(records.column_names, [GenerateStage(spec), Leaky(spec.qc), WriteStage(spec, str(tmp_path), "u")])
