"""A realistic provenance record for tests, with its watermark payload derived as the pipeline does
(scheme 2 by default; `provenance_version=1` gives an image of the earlier scheme)."""

from __future__ import annotations

from datetime import UTC, datetime

from diffgen.provenance import watermark_v1
from diffgen.provenance.record import ProvenanceRecord, watermark_payload_for


def sample_record(**overrides) -> ProvenanceRecord:
    run_id = overrides.get("run_id", "run-2026-11-22")
    record_id = overrides.get("record_id", "9f2c41d0a8b7e6f5c4d3b2a1")
    fields = {
        "record_id": record_id,
        "sample_index": 1,
        "run_id": run_id,
        "manifest_uri": "s3://bucket/manifests/cats.parquet",
        "manifest_row_id": "row-17",
        "model_id": "runwayml/stable-diffusion-v1-5",
        "model_revision": "451f4fe16113bff5a5d2269ed5ad43b0592e9a14",
        "model_weights_sha256": "ab" * 32,
        "model_family": "StableDiffusionPipeline",
        "scheduler": "euler",
        "steps": 20,
        "guidance_scale": 7.5,
        "seed": 2**63 - 5,
        "width": 64,
        "height": 64,
        "prompt": 'a café in the rain, 東京 <neon> & "quotes"',
        "negative_prompt": "blurry",
        "git_commit": "0" * 40,
        "created_at": datetime(2026, 11, 22, 3, 4, 5, 678000, tzinfo=UTC),
    }
    fields.update(overrides)
    record = ProvenanceRecord(**fields)
    if "watermark_payload" in overrides:
        return record
    if record.provenance_version == 1:  # scheme 1: the payload names the run and record only
        payload = watermark_v1.payload_for(run_id, record_id)
    else:
        payload = watermark_payload_for(record)
    return record.model_copy(update={"watermark_payload": payload.hex()})
