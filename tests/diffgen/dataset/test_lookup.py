"""Finding an image's index row from its watermark: JPEG, resized, cropped, no metadata; local and S3 outputs."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from diffgen.dataset import storage
from diffgen.dataset.lookup import IndexLookup
from diffgen.dataset.records import expand
from diffgen.jobs.cli import main
from diffgen.provenance.png import decode_png, encode_png
from diffgen.provenance.record import png_text_chunks
from diffgen.provenance.verify import verify_image
from diffgen.schemas.job import JobSpec
from diffgen.stages.generate import GenerateStage
from diffgen.stages.write import WriteStage


@pytest.fixture(scope="module")
def generated(tiny_sd):
    spec = JobSpec.model_validate(
        {
            "run_id": "lookup",
            "model": {"id": str(tiny_sd)},
            "sampler": {"steps": 2, "guidance_scale": 1.0, "width": 256, "height": 256},
            "compute": {"batch_size": 3},
        }
    )
    rows = [{"id": "cats", "prompt": "a cat on a sofa", "num_images": 2}, {"id": "dogs", "prompt": "a dog"}]
    stage = GenerateStage(spec)
    stage.setup()
    return spec, stage(expand(pa.Table.from_pylist(rows), spec))


def _written(generated, output: str) -> list[dict]:
    spec, batch = generated
    return WriteStage(spec, output, "lookup")(batch).to_pylist()


def _in_the_wild(png: bytes) -> bytes:
    """What a dataset does to an image: crop 5 % off each side, resize to 75 %, JPEG q80, metadata gone."""
    pixels, _ = decode_png(png)
    h, w = pixels.shape[:2]
    cut = round(h * 0.05)
    image = Image.fromarray(pixels[cut : h - cut, cut : w - cut]).resize((192, 192), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def test_a_stripped_jpeg_finds_its_row(generated, tmp_path):
    rows = _written(generated, str(tmp_path / "out"))
    lookup = IndexLookup([str(tmp_path / "out")])
    for row in rows:
        report = verify_image(_in_the_wild(storage.read_bytes(row["image_uri"])), lookup=lookup.rows)
        assert report.ok, report.summary_lines()
        (found,) = report.index_rows
        assert (found["record_id"], found["id"], found["prompt"]) == (row["record_id"], row["id"], row["prompt"])
        assert found["run_id"] == "lookup" and found["model_id"] == row["model_id"]
        statuses = {c.name: c.status for c in report.checks}
        assert statuses["provenance"] == "skip" and statuses["index"] == "pass"


def test_an_edited_record_is_named_field_by_field_against_its_row(generated, tmp_path):
    row = _written(generated, str(tmp_path / "out"))[0]
    from diffgen.provenance.record import ProvenanceRecord

    pixels, _ = decode_png(storage.read_bytes(row["image_uri"]))
    record = ProvenanceRecord.from_json(row["provenance"]).model_copy(update={"prompt": "a wolf", "seed": 3})
    report = verify_image(encode_png(pixels, png_text_chunks(record)), lookup=IndexLookup([str(tmp_path / "out")]).rows)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["watermark"] == "fail" and statuses["index"] == "fail"
    assert "prompt, seed" in next(c.detail for c in report.checks if c.name == "index")


def test_an_unmarked_image_matches_no_row(generated, tmp_path):
    _written(generated, str(tmp_path / "out"))
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    report = verify_image(encode_png(pixels), lookup=IndexLookup([str(tmp_path / "out")]).rows)
    assert not report.ok and report.index_rows is None


def test_the_index_on_s3_and_the_command_line(generated, s3_bucket, tmp_path, capsys):
    """Two outputs, one local and one on S3 (moto's server); the image's row is in the S3 one."""
    spec, batch = generated
    WriteStage(spec, str(tmp_path / "local"), "another-run")(batch)
    output = f"{s3_bucket}/out"
    rows = _written(generated, output)
    photo = tmp_path / "found-in-the-wild.jpg"
    photo.write_bytes(_in_the_wild(storage.read_bytes(rows[2]["image_uri"])))
    assert main(["verify", str(photo), "--index", str(tmp_path / "local"), output]) == 0
    out = capsys.readouterr().out
    assert f"record {rows[2]['record_id']}" in out and "manifest row dogs" in out and "prompt 'a dog'" in out
    assert f"({output})" in out and "run lookup" in out
    assert main(["verify", str(photo), "--index", str(tmp_path / "no-such-output")]) != 0
