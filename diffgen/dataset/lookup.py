"""Finding an image's row from its watermark payload: a lookup in one or more outputs' indexes.

Each index is read once (keeping the columns a row shows) and kept as a payload -> rows map, so a
lookup costs a dictionary access, not a scan of images. Works on any storage URI, S3 included.
"""

from __future__ import annotations

from typing import Any

from diffgen.dataset import storage
from diffgen.dataset.layout import INDEX_DIR

ROW_COLUMNS = ("record_id", "id", "run_id", "model_id", "prompt", "seed", "status", "image_uri", "provenance")


class IndexLookup:
    """Index rows of `outputs` by watermark payload (16 hex characters)."""

    def __init__(self, outputs: list[str]):
        self.outputs = list(outputs)
        self._rows: dict[str, list[dict[str, Any]]] | None = None

    def rows(self, payload_hex: str) -> list[dict[str, Any]]:
        """Every index row carrying this payload, each with the output it came from under `output`."""
        if self._rows is None:
            self._rows = {}
            for output in self.outputs:
                self._load(output)
        return self._rows.get(payload_hex, [])

    def _load(self, output: str) -> None:
        shards = storage.list_files(storage.join(output, INDEX_DIR), ".parquet")
        if not shards:
            raise FileNotFoundError(f"{output} has no index ({INDEX_DIR}/*.parquet)")
        for uri in shards:
            table = storage.read_parquet(uri)
            if "watermark_payload" not in table.column_names:
                continue
            table = table.select(["watermark_payload", *(c for c in ROW_COLUMNS if c in table.column_names)])
            for row in table.to_pylist():
                payload = row.pop("watermark_payload")
                if payload:
                    self._rows.setdefault(payload, []).append({**row, "output": output})
