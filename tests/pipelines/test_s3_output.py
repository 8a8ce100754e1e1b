"""A whole run written to a real S3 endpoint (moto's server on loopback) and read back."""

import hashlib
import json

import fsspec

from diffgen.dataset import storage
from diffgen.jobs.api import EXIT_FAILED
from diffgen.jobs.cli import main
from diffgen.pipelines.generate import run
from diffgen.provenance.png import decode_png
from diffgen.provenance.verify import verify_image
from diffgen.schemas.job import load_job_spec
from tests.conftest import FAKE_SECRET, write_job, write_manifest
from tests.diffgen.provenance.c2pa_certs import make_pki
from tests.diffgen.provenance.png_chunks import flip_pixel_byte

ROWS = [{"id": f"r{i}", "prompt": f"a shape {i}", "num_images": 2, "label": i % 2} for i in range(3)]
ALL_PASS = {
    "provenance": "pass",
    "xmp": "pass",
    "watermark": "pass",
    "c2pa": "pass",
    "c2pa-record": "pass",
    "c2pa-watermark": "pass",
}


def _run_to_s3(tmp_path, tiny_sd, bucket: str, **provenance):
    """Six 64 px images from a manifest on S3 to an output on S3; returns (summary, output, index rows)."""
    manifest = write_manifest(tmp_path / "m.parquet", ROWS)
    storage.write_bytes(f"{bucket}/in/m.parquet", manifest.read_bytes())
    output = f"{bucket}/runs/one"
    # 64 px and the default provenance policy: every image must carry a verified watermark.
    job = write_job(
        tmp_path / "job.yaml",
        tiny_sd,
        sampler={"width": 64, "height": 64, "steps": 2},
        provenance={"allow_unwatermarked": False, **provenance},
    )
    summary = run(load_job_spec(job, manifest=f"{bucket}/in/m.parquet", output=output))
    index = storage.read_parquet_folder(f"{output}/index")
    return summary, output, index.to_pylist()


def _objects(uri: str) -> dict[str, bytes]:
    """Every object under an s3:// prefix, by key."""
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return {p: fs.cat_file(p) for p in fs.find(uri.removeprefix("s3://"))}


def test_run_to_s3_and_read_back(ray_cluster, tmp_path, tiny_sd, s3_bucket):
    summary, output, index = _run_to_s3(tmp_path, tiny_sd, s3_bucket)

    assert summary.status == "complete" and summary.counts.images_written == 6
    assert len(index) == 6
    for row in index:
        assert row["image_uri"].startswith(f"{output}/images/")
        data = storage.read_bytes(row["image_uri"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert decode_png(data)[0].shape == (64, 64, 3)
        assert row["watermark_ok"] and len(row["watermark_payload"]) == 16
        report = verify_image(data)
        assert report.ok, report.summary_lines()
    written = _objects(output)
    assert any(p.endswith("/run.json") for p in written)
    assert not any(FAKE_SECRET.encode() in data for data in written.values())


def test_c2pa_signed_run_to_s3_verifies_against_the_test_ca(ray_cluster, tmp_path, tiny_sd, s3_bucket, capsys):
    pki = make_pki()
    # Chain, key and trust anchor live in the bucket too: the pre-flight reads chain and key from
    # their s3:// URIs on the driver, and the workers sign with the checked bytes it passes them.
    creds = f"{s3_bucket}/credentials"
    for name, data in (("chain.pem", pki.chain_pem), ("key.pem", pki.key_pem), ("ca.pem", pki.ca_pem)):
        storage.write_bytes(f"{creds}/{name}", data)
    c2pa = {"cert_chain": f"{creds}/chain.pem", "private_key": f"{creds}/key.pem"}

    summary, output, index = _run_to_s3(tmp_path, tiny_sd, s3_bucket, c2pa=c2pa)

    assert summary.status == "complete" and summary.counts.images_written == 6
    uris = []
    for row in index:
        assert row["status"] == "written" and row["c2pa_valid"] is True and row["watermark_ok"]
        data = storage.read_bytes(row["image_uri"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        report = verify_image(data, pki.ca_pem, require_c2pa=True)
        assert {c.name: c.status for c in report.checks} == ALL_PASS, report.summary_lines()
        assert report.c2pa.trusted and "diffgen test signer" in report.c2pa.signer
        assert report.record["record_id"] == row["record_id"]
        uris.append(row["image_uri"])

    # One pixel byte changed with every CRC fixed (only the C2PA hash can tell), one raw byte flipped.
    forged, flipped = uris[0], uris[1]
    storage.write_bytes(forged, flip_pixel_byte(storage.read_bytes(forged)))
    raw = bytearray(storage.read_bytes(flipped))
    raw[len(raw) // 2] ^= 0xFF
    storage.write_bytes(flipped, bytes(raw))
    capsys.readouterr()
    assert main(["verify", "--trust-anchors", f"{creds}/ca.pem", "--require-c2pa", "--json", *uris]) == EXIT_FAILED
    reports = json.loads(capsys.readouterr().out)
    assert reports.keys() == set(uris)
    assert {uri for uri, r in reports.items() if not r["ok"]} == {forged, flipped}
    c2pa_check = next(c for c in reports[forged]["checks"] if c["name"] == "c2pa")
    assert c2pa_check["status"] == "fail" and "dataHash.mismatch" in c2pa_check["detail"]
    assert all(r["c2pa"]["state"] == "Trusted" for uri, r in reports.items() if uri not in (forged, flipped))

    # Neither the fake AWS secret nor the signing key reaches the output; run.json names the key's URI only.
    written = _objects(output)
    needles = (FAKE_SECRET.encode(), b"PRIVATE KEY", pki.key_pem.splitlines()[1])
    assert not any(needle in data for data in written.values() for needle in needles)
    run_json = json.loads(next(data for p, data in written.items() if p.endswith("/run.json")))
    assert run_json["job"]["provenance"]["c2pa"] == c2pa
