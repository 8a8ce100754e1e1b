"""Steered generation through the whole pipeline on the session's local Ray: a ControlNet job whose
manifest has one corrupt control image."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffgen.dataset import storage
from diffgen.pipelines.generate import run
from diffgen.provenance.png import decode_png
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest

ROWS = 20
BAD = "row-07"


@pytest.fixture(scope="module")
def control_images(tmp_path_factory) -> dict[str, str]:
    folder: Path = tmp_path_factory.mktemp("controls")
    rng = np.random.default_rng(1)
    uris = {}
    for i in range(ROWS):
        rid = f"row-{i:02d}"
        path = folder / f"{rid}.png"
        if rid == BAD:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)  # a PNG signature and nothing decodable after it
        else:
            Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(path)
        uris[rid] = str(path)
    return uris


def test_a_bad_control_image_rejects_its_row_and_the_other_19_are_written(
    ray_cluster, tmp_path, tiny_sd, tiny_controlnet, control_images
):
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"id": rid, "prompt": f"shape {rid}", "control_image": uri} for rid, uri in control_images.items()],
    )
    job = write_job(
        tmp_path / "job.yaml",
        tiny_sd,
        sampler={"steps": 2},
        controlnets=[{"name": "edges", "model": {"id": str(tiny_controlnet)}, "preprocessor": "canny"}],
        compute={"batch_size": 4},
    )
    out = tmp_path / "out"
    summary = run(load_job_spec(job, manifest=str(manifest), output=str(out)))

    c = summary.counts
    assert (c.images_expected, c.images_written, c.rejected, c.failed) == (ROWS, ROWS - 1, 1, 0)
    index = {r["id"]: r for r in storage.read_parquet_folder(str(out / "index")).to_pylist()}
    assert len(index) == ROWS
    bad = index[BAD]
    assert bad["status"] == "rejected" and bad["image_uri"] is None
    assert bad["error"].startswith(f"control_image: cannot decode {control_images[BAD]} (")
    for rid, row in index.items():
        if rid == BAD:
            continue
        assert row["status"] == "written"
        assert row["control_image_uris"] == [control_images[rid]]
        assert row["control_image_sha256"] == [hashlib.sha256(Path(control_images[rid]).read_bytes()).hexdigest()]
        assert row["pipeline_class"] == "StableDiffusionControlNetPipeline" and row["cfg"] is True
        assert decode_png(storage.read_bytes(row["image_uri"]))[0].shape == (32, 32, 3)
    assert len(list((out / "images").rglob("*.png"))) == ROWS - 1
