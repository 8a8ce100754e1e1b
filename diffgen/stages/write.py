"""The write stage: PNG-encode each image, write it, then commit the batch's index shard.

Retry-safe: image keys and the shard name are functions of the record ids, so a
retried batch overwrites its own files instead of duplicating them. The shard is
written only after every image in it, so an index row never points at missing bytes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from diffgen import storage
from diffgen.png import encode_png
from schemas.job import JobSpec
from schemas.record import INDEX_COLUMNS, INDEX_SCHEMA, TRANSIENT_COLUMNS, RecordStatus

PROVENANCE_KEY = "diffgen"


def image_key(record_id: str) -> str:
    """`images/ab/abcdef....png`: a short hash prefix spreads objects over S3 key prefixes."""
    return f"images/{record_id[:2]}/{record_id}.png"


def shard_name(record_ids: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(record_ids)).encode()).hexdigest()[:20]
    return f"index/part-{digest}.parquet"


class WriteStage:
    reads = (
        "record_id", "id", "sample_index", "pixels", "status", "error",
        "seed", "prompt", "negative_prompt", "guidance_scale", "steps", "width", "height",
    )  # fmt: skip
    adds = ("image_uri", "sha256", "run_id", "model_id", "scheduler", "created_at")

    def __init__(self, spec: JobSpec, output: str, run_id: str):
        self.spec = spec
        self.output = output
        self.run_id = run_id

    def setup(self) -> None:
        pass

    def _provenance(self, row: dict) -> str:
        record = {
            "run_id": self.run_id,
            "record_id": row["record_id"],
            "id": row["id"],
            "sample_index": row["sample_index"],
            "model_id": self.spec.model.id,
            "model_revision": self.spec.model.revision,
            "scheduler": self.spec.sampler.scheduler,
            "steps": row["steps"],
            "guidance_scale": row["guidance_scale"],
            "seed": row["seed"],
            "prompt": row["prompt"],
            "negative_prompt": row["negative_prompt"],
        }
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        now = datetime.now(UTC)
        for row in rows:
            row.update(run_id=self.run_id, model_id=self.spec.model.id, scheduler=self.spec.sampler.scheduler)
            row.update(created_at=now, image_uri=None, sha256=None)
            if row["status"] is None:
                pixels = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
                data = encode_png(pixels, {PROVENANCE_KEY: self._provenance(row)})
                uri = storage.join(self.output, image_key(row["record_id"]))
                storage.write_bytes(uri, data)
                row.update(image_uri=uri, sha256=hashlib.sha256(data).hexdigest(), status=RecordStatus.WRITTEN.value)
        passthrough = [c for c in batch.column_names if c not in INDEX_COLUMNS and c not in TRANSIENT_COLUMNS]
        # Columns that no stage of this job produces (no ControlNet, no QC) stay null.
        columns = {name: pa.array([r.get(name) for r in rows], INDEX_SCHEMA.field(name).type) for name in INDEX_COLUMNS}
        index = pa.table(columns, schema=INDEX_SCHEMA)
        for name in passthrough:
            index = index.append_column(batch.schema.field(name), batch.column(name))
        storage.write_parquet(index, storage.join(self.output, shard_name(index.column("record_id").to_pylist())))
        return index
