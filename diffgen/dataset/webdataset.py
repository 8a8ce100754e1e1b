"""The written images of an output as WebDataset tar shards, for training straight from shards.

    OUTPUT/webdataset/shard-000000.tar ...   <record_id>.png + <record_id>.json per sample
    OUTPUT/webdataset/shards.parquet         record_id -> shard, byte range of the PNG member, sha256

A sample's key is its `record_id` (WebDataset splits a member name at its first dot, so keys
carry none). `<key>.png` holds the bytes written under `images/`, unchanged, so the watermark,
provenance chunks and C2PA manifest survive; `<key>.json` holds the sample's index row, column
for column (timestamps as ISO 8601, non-finite floats as null, unsigned 64-bit integers such as
`phash` as 16-digit hex strings: JSON readers that parse into signed 64-bit integers, Arrow's among
them, fail on values above 2^63). Only `written` rows are packed, in record_id order, spread as
evenly as they go over `min_shards` shards (fewer when there are fewer samples), so every DataLoader
worker gets shards of its own; a shard also ends before a sample that would push it past
`shard_max_bytes`. With `split_by` each value of that column gets a folder of its own,
`webdataset/<value>/shard-<n>.tar`. Tar headers are fixed (ustar, mtime 0, uid/gid 0, mode 0644,
no user names), so packing the same index again gives byte-identical shards.

Packing reads one image at a time and holds one shard in memory: peak memory is about twice
`shard_max_bytes` (the shard and its copy on the way out), whatever the size of the output.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from diffgen.dataset import storage
from diffgen.dataset.layout import WEBDATASET_DIR, WEBDATASET_SHARDS, webdataset_shard
from diffgen.schemas.record import RecordStatus

log = logging.getLogger(__name__)

SHARDS_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("shard", pa.string()),  # path under webdataset/: shard-<n>.tar; with split_by <column>=<value>/shard-<n>.tar
        ("png_offset", pa.int64()),  # first byte of the PNG inside the shard: a ranged GET reads one image
        ("png_size", pa.int64()),
        ("sha256", pa.string()),
    ]
)
# ustar names hold 100 characters; "<key>.json" must fit without a pax header.
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,90}$")
# A split value names a folder: no separators, no dot-only names, nothing a shell or URL must quote.
_SPLIT = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$")
_INT64_MAX = 2**63 - 1
_NEEDED = ("record_id", "status", "image_uri", "sha256")
_ROWS_PER_BATCH = 1024


class WebDatasetError(RuntimeError):
    """The index and the written images cannot be packed as they are (missing column, bad key, changed bytes)."""


@dataclass(frozen=True)
class PackResult:
    shards: int
    samples: int
    bytes: int
    removed: int
    """Shards of an earlier packing that no longer exist in this one, deleted."""


def pack(
    output: str, index: pa.Table | None, shard_max_bytes: int, *, min_shards: int = 1, split_by: str | None = None
) -> PackResult:
    """Write the `written` rows of `index` (an output's compacted index) as shards under OUTPUT/webdataset/.

    Every image's sha256 is checked against its index row before it goes in. Each shard is
    written whole (atomically), then shards.parquet, then shards left from an earlier packing
    that this one did not write are removed.
    """
    folder = storage.join(output, WEBDATASET_DIR)
    placed: list[pa.Table] = []
    names: list[str] = []
    written_bytes = 0
    for split, rows in _splits(_written(index), split_by):
        # Where a new shard starts so that the samples spread evenly over `min_shards` (fewer if there are fewer)
        starts = {j * rows.num_rows // min_shards for j in range(1, min_shards)}
        folder_of = None if split is None else (split_by, split)
        shard, number = _Shard(), 0
        for position, row in enumerate(_rows(rows)):
            key = row["record_id"]
            png = storage.read_bytes(row["image_uri"])
            if hashlib.sha256(png).hexdigest() != row["sha256"]:
                raise WebDatasetError(f"{row['image_uri']}: sha256 differs from the index row of record {key}")
            meta = sample_json(row)
            if shard.samples and (position in starts or shard.size_with(len(png), len(meta)) > shard_max_bytes):
                written_bytes += _flush(shard, folder, webdataset_shard(number, folder_of), names, placed)
                shard, number = _Shard(), number + 1
            shard.add(key, png, meta, row["sha256"])
        if shard.samples:
            written_bytes += _flush(shard, folder, webdataset_shard(number, folder_of), names, placed)
    table = pa.concat_tables(placed) if placed else SHARDS_SCHEMA.empty_table()
    storage.write_parquet(table, storage.join(output, WEBDATASET_SHARDS))
    stale = [uri for uri in _shard_files(folder) if uri.removeprefix(folder).strip("/") not in names]
    for uri in stale:
        storage.delete(uri)
    result = PackResult(shards=len(names), samples=table.num_rows, bytes=written_bytes, removed=len(stale))
    log.info(
        "webdataset: %d sample(s) in %d shard(s), %.1f MB -> %s%s",
        result.samples, result.shards, result.bytes / 1e6, folder,
        f" ({result.removed} stale shard(s) removed)" if result.removed else "",
    )  # fmt: skip
    return result


def _shard_files(folder: str) -> list[str]:
    """Every .tar under `folder` and its split folders (one level down)."""
    found = []
    for entry in storage.list_files(folder):
        if entry.endswith(".tar"):
            found.append(entry)
        elif not entry.endswith(".parquet"):
            found += storage.list_files(entry, ".tar")
    return found


def sample_json(row: dict[str, Any]) -> bytes:
    """The `.json` member: an index row as UTF-8 JSON, keys sorted, so the same row gives the same bytes."""
    return json.dumps(_plain(row), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _written(index: pa.Table | None) -> pa.Table | None:
    """The index's written rows in record_id order, unsigned 64-bit columns as hex strings."""
    if index is None:
        return None
    missing = [c for c in _NEEDED if c not in index.column_names]
    if missing:
        raise WebDatasetError(f"index: column(s) {', '.join(missing)} missing; cannot pack")
    written = index.filter(pc.equal(index.column("status"), RecordStatus.WRITTEN.value)).sort_by("record_id")
    ids = written.column("record_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        raise WebDatasetError("index: a record_id appears twice; compact the index before packing")
    for i, column in enumerate(written.schema):
        if pa.types.is_uint64(column.type):
            values = [None if v is None else f"{v:016x}" for v in written.column(i).to_pylist()]
            written = written.set_column(i, pa.field(column.name, pa.string()), pa.array(values, pa.string()))
    return written


def _splits(written: pa.Table | None, split_by: str | None) -> Iterator[tuple[str | None, pa.Table]]:
    """(value, its rows) per value of `split_by` in sorted order; (None, all rows) without it."""
    if written is None or written.num_rows == 0:
        return
    if split_by is None:
        yield None, written
        return
    if split_by not in written.column_names:
        raise WebDatasetError(f"webdataset.split_by: the index has no column '{split_by}'")
    if not _SPLIT.match(split_by) or "=" in split_by:
        raise WebDatasetError(f"webdataset.split_by: column name {split_by!r} cannot name a folder")
    values = written.column(split_by).cast(pa.string())
    for value in sorted(set(values.to_pylist()), key=lambda v: (v is None, v)):
        if value is None or not _SPLIT.match(value):
            raise WebDatasetError(
                f"webdataset.split_by: value {value!r} of '{split_by}' cannot name a folder "
                "(1-64 letters, digits, '.', '_' or '-')"
            )
        yield value, written.filter(pc.equal(values, value))


def _rows(written: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of `written`, a batch at a time, each checked to be packable."""
    for batch in written.to_batches(max_chunksize=_ROWS_PER_BATCH):
        for row in batch.to_pylist():
            if not isinstance(row["record_id"], str) or not _KEY.match(row["record_id"]):
                raise WebDatasetError(
                    f"index: record_id {row['record_id']!r} cannot be a WebDataset key "
                    "(1-90 letters, digits, '_' or '-'; no dots)"
                )
            if row["image_uri"] is None or row["sha256"] is None:
                raise WebDatasetError(f"index: written record {row['record_id']} has no image_uri or sha256")
            yield row


class _Shard:
    """One tar archive in memory, with the byte accounting that decides where the next shard starts."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples = 0
        self.rows: dict[str, list[Any]] = {"record_id": [], "png_offset": [], "png_size": [], "sha256": []}

    def size_with(self, png_size: int, json_size: int) -> int:
        """The archive's final size if one more sample of these sizes went in."""
        members = 2 * tarfile.BLOCKSIZE + _blocks(png_size) + _blocks(json_size)
        # Closing appends two zero blocks and pads the archive to a whole tar record.
        end = self.buffer.tell() + members + 2 * tarfile.BLOCKSIZE
        return -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE

    def add(self, key: str, png: bytes, meta: bytes, sha256: str) -> None:
        self.rows["record_id"].append(key)
        self.rows["png_offset"].append(self.buffer.tell() + tarfile.BLOCKSIZE)
        self.rows["png_size"].append(len(png))
        self.rows["sha256"].append(sha256)
        for name, data in ((f"{key}.png", png), (f"{key}.json", meta)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def close(self) -> bytes:
        self.tar.close()
        data = self.buffer.getvalue()
        self.buffer.close()
        return data


def _flush(shard: _Shard, folder: str, name: str, names: list[str], placed: list[pa.Table]) -> int:
    """Write a full shard under `name` (its path under webdataset/) and note where its samples went."""
    data = shard.close()
    storage.write_bytes(storage.join(folder, name), data)
    log.info("webdataset: %s, %d sample(s), %d bytes", name, shard.samples, len(data))
    names.append(name)
    placed.append(
        pa.table({**shard.rows, "shard": [name] * shard.samples}).select(SHARDS_SCHEMA.names).cast(SHARDS_SCHEMA)
    )
    return len(data)


def _blocks(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _plain(value: Any) -> Any:
    """A value from Arrow's `to_pylist` as JSON can hold it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        return str(value)  # beyond a signed 64-bit integer, which Arrow's and many JSON readers stop at
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
