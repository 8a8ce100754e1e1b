"""A whole run written to a real S3 endpoint (moto's server on loopback) and read back."""

import hashlib

import fsspec

from diffgen import storage
from diffgen.png import decode_png
from diffgen.verify import verify_image
from pipelines.generate import run
from schemas.job import load_job_spec
from tests.conftest import FAKE_SECRET, write_job, write_manifest


def test_run_to_s3_and_read_back(ray_cluster, tmp_path, tiny_sd, s3_bucket):
    rows = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 2, "label": i % 2} for i in range(3)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    storage.write_bytes(f"{s3_bucket}/in/m.parquet", manifest.read_bytes())
    output = f"{s3_bucket}/runs/one"
    # 64 px and the default provenance policy: every image must carry a verified watermark.
    job = write_job(
        tmp_path / "job.yaml", tiny_sd, sampler={"width": 64, "height": 64, "steps": 2}, provenance={"allow_unwatermarked": False}
    )

    summary = run(load_job_spec(job, manifest=f"{s3_bucket}/in/m.parquet", output=output))

    assert summary.status == "complete" and summary.counts.images_written == 6
    index = storage.read_parquet_folder(f"{output}/index")
    assert index.num_rows == 6
    for row in index.to_pylist():
        assert row["image_uri"].startswith(f"{output}/images/")
        data = storage.read_bytes(row["image_uri"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert decode_png(data)[0].shape == (64, 64, 3)
        assert row["watermark_ok"] and len(row["watermark_payload"]) == 16
        report = verify_image(data)
        assert report.ok, report.summary_lines()
    fs = fsspec.filesystem("s3")
    written = fs.find(output.removeprefix("s3://"))
    assert any(p.endswith("/run.json") for p in written)
    assert not any(FAKE_SECRET.encode() in fs.cat_file(p) for p in written)
