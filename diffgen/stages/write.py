"""The write stage: watermark each image, encode it as PNG with its provenance (iTXt JSON + XMP),
optionally sign it with C2PA, write it, then commit the batch's index shard.

Retry-safe: image keys and the shard name are functions of the record ids, so a
retried batch overwrites its own files instead of duplicating them. The shard is
written only after every image in it, so an index row never points at missing bytes.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from diffgen.dataset import storage
from diffgen.dataset.layout import image_key, index_shard
from diffgen.generation.model_folder import model_index, model_name
from diffgen.metrics.image_checks import phash
from diffgen.provenance import watermark
from diffgen.provenance.c2pa import C2paCredentials, C2paSigner, C2paSigningError, sign_png, verify_png
from diffgen.provenance.png import encode_png
from diffgen.provenance.record import (
    ProvenanceRecord,
    file_sha256,
    git_commit,
    png_text_chunks,
    watermark_payload_for,
    weights_hash,
)
from diffgen.schemas.job import JobSpec
from diffgen.schemas.record import (
    INDEX_COLUMNS,
    INDEX_SCHEMA,
    TRANSIENT_COLUMNS,
    IpAdapterUse,
    LoraUse,
    RecordStatus,
    TextualInversionUse,
)

# A watermark that does not read back is embedded again over itself at most this many times in all,
# while the marked image stays this close to the unmarked one (one embedding is ~40-41 dB on average).
WATERMARK_EMBEDS = 3
MIN_WATERMARK_PSNR = 35.0


class WriteStage:
    reads = (
        "record_id", "id", "sample_index", "pixels", "status", "error",
        "seed", "prompt", "negative_prompt", "guidance_scale", "steps", "width", "height",
    )  # fmt: skip
    adds = (
        "image_uri", "sha256", "run_id", "model_id", "model_weights_sha256", "loras", "scheduler", "scheduler_options",
        "textual_inversions", "ip_adapters", "created_at",
        "watermark_payload", "watermark_ok", "watermark_embeds", "c2pa_valid", "provenance", "image_path",
    )  # fmt: skip

    def __init__(self, spec: JobSpec, output: str, run_id: str, credentials: C2paCredentials | None = None):
        self.spec = spec
        self.output = output
        self.run_id = run_id
        self.credentials = credentials
        self._signer: C2paSigner | None = None
        self._weights: str | None = None
        self._model_name = spec.model.id
        self._loras: list[LoraUse] = []
        self._commit: str | None = None
        self._ready = False
        self._uploads: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_uploads=None, _pending=[])  # threads do not travel; a copy starts its own
        return state

    def setup(self) -> None:
        """Once per worker: hash the weights (cached per folder), build the C2PA signer."""
        self._weights = weights_hash(model_index(self.spec.model)[0])
        self._model_name = model_name(self.spec.model)  # provenance names no local path
        self._loras = [
            LoraUse(name=x.adapter_name, path=x.path, weight=x.weight, sha256=file_sha256(x.path))
            for x in self.spec.loras
        ]
        self._embeddings = [
            TextualInversionUse(token=t.token, path=t.path, sha256=file_sha256(t.path))
            for t in self.spec.textual_inversions
        ]
        self._ip_adapters = [
            IpAdapterUse(weights=a.weights, sha256=file_sha256(a.weights), image_encoder=a.image_encoder,
                         image_encoder_sha256=weights_hash(Path(a.image_encoder)), scale=a.scale)
            for a in self.spec.ip_adapters
        ]  # fmt: skip
        self._commit = git_commit()
        options = self.spec.sampler.scheduler_options
        self._scheduler_options = json.dumps(options, sort_keys=True) if options else None
        self._signer = C2paSigner(self.credentials) if self.credentials else None
        self._ready = True

    def _record(self, row: dict, payload: bytes | None) -> ProvenanceRecord:
        controls = [(u, h) for u, h in zip(row.get("control_image_uris") or [], row.get("control_image_sha256") or [])
                    if u is not None]  # fmt: skip
        inits = [(row[k], row[f"{k}_sha256"]) for k in ("init_image", "mask_image") if row.get(k)]
        return ProvenanceRecord(
            record_id=row["record_id"],
            sample_index=row["sample_index"],
            run_id=self.run_id,
            manifest_uri=self.spec.manifest_source or self.spec.manifest,
            manifest_row_id=row["id"],
            model_id=self._model_name,
            model_revision=self.spec.model.revision,
            model_weights_sha256=self._weights,
            loras=self._loras or None,
            textual_inversions=self._embeddings or None,
            ip_adapters=self._ip_adapters or None,
            ip_adapter_image_uri=row.get("ip_adapter_image"),
            ip_adapter_image_sha256=row.get("ip_adapter_image_sha256"),
            model_family=row.get("pipeline_class"),
            scheduler=self.spec.sampler.scheduler,
            scheduler_options=self.spec.sampler.scheduler_options or None,
            steps=row["steps"],
            guidance_scale=row["guidance_scale"],
            seed=row["seed"],
            width=row["width"],
            height=row["height"],
            prompt=row["prompt"],
            negative_prompt=row["negative_prompt"] or "",
            control_image_uris=[u for u, _ in controls] or None,
            control_image_sha256s=[h for _, h in controls] or None,
            init_image_uris=[u for u, _ in inits] or None,
            init_image_sha256s=[h for _, h in inits] or None,
            git_commit=self._commit,
            created_at=row["created_at"],
            watermark_payload=payload.hex() if payload else None,
        )

    def _mark(self, pixels: np.ndarray, payload: bytes) -> tuple[np.ndarray, bytes | None, int]:
        """The watermarked pixels, payload and number of embeddings; raises `_RowProblem` when the image
        cannot be marked. A mark that does not read back is embedded again over itself (each pass moves
        the blocks that rounding or clipping knocked off their lattice back onto it), up to
        `WATERMARK_EMBEDS` passes and while the image stays within `MIN_WATERMARK_PSNR` of the unmarked one;
        past that the image fails as replaceable: another seed gives another image."""
        if not self.spec.provenance.watermark:
            return pixels, None, 0
        try:
            marked = watermark.embed(pixels, payload)
        except watermark.WatermarkError as e:
            if self.spec.provenance.allow_unwatermarked:
                return pixels, None, 0
            raise _RowProblem(RecordStatus.REJECTED, f"watermark_too_small: {e}") from None
        embeds = 1
        while (decoded := watermark.extract(marked, search=False)) != payload and embeds < WATERMARK_EMBEDS:
            again = watermark.embed(marked, payload)
            if psnr(again, pixels) < MIN_WATERMARK_PSNR:
                break
            marked, embeds = again, embeds + 1
        if decoded != payload:
            read = "no payload" if decoded is None else f"payload {decoded.hex()}"
            raise _RowProblem(RecordStatus.FAILED, f"watermark_verify_failed: {read} read back after "
                                                   f"{embeds} embedding(s)", replaceable=True)  # fmt: skip
        return marked, payload, embeds

    def _write_one(self, row: dict) -> None:
        pixels = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
        # The payload commits to the record (its ids and how the image was made), so the record comes first.
        marked, payload, embeds = self._mark(pixels, watermark_payload_for(self._record(row, None)))
        if row.get("phash") is not None:  # QC hashed the unmarked pixels; the index describes the delivered ones
            row["phash"] = phash(marked)
        record = self._record(row, payload)
        data = encode_png(marked, png_text_chunks(record), self.spec.write.png_compress_level)
        if self._signer is not None:
            try:
                data = sign_png(data, record, self._signer)
            except C2paSigningError as e:
                raise _RowProblem(RecordStatus.FAILED, f"c2pa_sign_failed: {e}") from None
            row["c2pa_valid"] = verify_png(data).valid
        path = image_key(row["record_id"])
        uri = storage.join(self.output, path)
        self._upload(uri, data)
        row.update(
            image_uri=uri,
            image_path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            status=RecordStatus.WRITTEN.value,
            watermark_payload=record.watermark_payload,
            watermark_ok=payload is not None,
            watermark_embeds=embeds,
            provenance=record.to_json(),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._ready:
            self.setup()
        rows = batch.to_pylist()
        now = datetime.now(UTC)
        for row in rows:
            row.update(run_id=self.run_id, model_id=self.spec.model.id, scheduler=self.spec.sampler.scheduler,
                       scheduler_options=self._scheduler_options,
                       textual_inversions=[x.model_dump() for x in self._embeddings] or None,
                       ip_adapters=[x.model_dump() for x in self._ip_adapters] or None,
                       model_weights_sha256=self._weights, loras=[x.model_dump() for x in self._loras] or None)
            row.update(created_at=now, image_uri=None, image_path=None, sha256=None)
        try:
            for row in rows:
                if row["status"] is None:
                    try:
                        self._write_one(row)
                    except _RowProblem as problem:
                        row.update(status=problem.status.value, error=problem.error, replaceable=problem.replaceable)
        except BaseException:
            # No upload of a failed batch may land after it (its retry writes these images again).
            wait(self._pending)
            self._pending = []
            raise
        self._finish_uploads()  # every image of the batch is stored before its index shard names it
        passthrough = [c for c in batch.column_names if c not in INDEX_COLUMNS and c not in TRANSIENT_COLUMNS]
        # Columns that no stage of this job produces (no ControlNet, no QC) stay null.
        columns = {name: pa.array([r.get(name) for r in rows], INDEX_SCHEMA.field(name).type) for name in INDEX_COLUMNS}
        index = pa.table(columns, schema=INDEX_SCHEMA)
        for name in passthrough:
            index = index.append_column(batch.schema.field(name), batch.column(name))
        storage.write_parquet(index, storage.join(self.output, index_shard(index.column("record_id").to_pylist())))
        return index


    def _upload(self, uri: str, data: bytes) -> None:
        """Store one image: in the background while the next is marked and encoded (at most
        `write.upload_concurrency` in flight), or at once with a concurrency of 1."""
        if self.spec.write.upload_concurrency == 1:
            storage.write_bytes(uri, data)
            return
        if self._uploads is None:
            self._uploads = ThreadPoolExecutor(self.spec.write.upload_concurrency, thread_name_prefix="diffgen-upload")
        while len(self._pending) >= self.spec.write.upload_concurrency:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            for future in done:
                self._pending.remove(future)
                future.result()
        self._pending.append(self._uploads.submit(storage.write_bytes, uri, data))

    def _finish_uploads(self) -> None:
        """Wait for the batch's uploads; the first that failed raises (an outage fails the batch, which
        the executor retries, as a failed upload in the foreground does)."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first


class _RowProblem(Exception):
    def __init__(self, status: RecordStatus, error: str, replaceable: bool = False):
        super().__init__(error)
        self.status, self.error, self.replaceable = status, error, replaceable


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
