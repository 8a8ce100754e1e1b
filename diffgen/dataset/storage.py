"""All data I/O, through fsspec: local paths, file://, s3:// and anything else fsspec opens.

S3 endpoints and credentials come from the standard AWS configuration
(environment, shared config files, instance roles): nothing here reads or logs them.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

# Object stores throttle (503 SlowDown) and hiccup (5xx): botocore's adaptive retry mode
# backs off exponentially and rate-limits the client instead of failing the write.
_OPTIONS: dict[str, dict] = {
    "s3": {"config_kwargs": {"retries": {"max_attempts": 10, "mode": "adaptive"}}},
}


class UnsupportedUriError(ValueError):
    """A URI whose protocol fsspec does not know, or whose filesystem package is not installed."""


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem that holds `uri` and the path within it."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    try:
        return fsspec.core.url_to_fs(uri, **_OPTIONS.get(protocol, {}))
    except ImportError as e:
        raise UnsupportedUriError(f"{uri}: the '{protocol}://' filesystem is not installed ({e})"[:300]) from None
    except ValueError:
        if protocol not in fsspec.available_protocols():
            raise UnsupportedUriError(f"{uri}: unknown protocol '{protocol}://' (use a local path, file://, s3://, "
                                      "or another fsspec protocol)") from None  # fmt: skip
        raise


def join(uri: str, *parts: str) -> str:
    """Join key parts onto a URI with '/', whatever the filesystem."""
    return posixpath.join(uri.rstrip("/"), *parts)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


class InputRefusedError(ValueError):
    """An input that is not a regular file, or larger than the limit: reading it again cannot help."""


def read_bounded(uri: str, max_bytes: int) -> bytes:
    """The bytes of a regular file at `uri`, refusing anything else before reading (FIFOs, devices,
    folders: `InputRefusedError`) and anything larger than `max_bytes`, by its stated size first and by
    what is actually read (procfs and some HTTP servers state none)."""
    fs, path = filesystem(uri)
    if not _is_http(fs):
        _check_stated(fs.info(path), max_bytes)
    with _open_bounded(fs, path, max_bytes) as handle:
        data = _read_up_to(handle, max_bytes + 1)
    if len(data) > max_bytes:
        raise InputRefusedError(f"more than policy.max_input_bytes={max_bytes} bytes")
    return data


def check_input(uri: str, max_bytes: int) -> None:
    """`read_bounded`'s checks without reading the bytes: raises what it would raise before reading."""
    fs, path = filesystem(uri)
    if _is_http(fs):
        with _open_bounded(fs, path, max_bytes):
            return
    _check_stated(fs.info(path), max_bytes)


def _is_http(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"http", "https"})


def _check_stated(info: dict, max_bytes: int) -> None:
    if info.get("type") != "file":
        raise InputRefusedError(f"not a regular file ({info.get('type')})")
    size = info.get("size")
    if isinstance(size, int) and size > max_bytes:
        raise InputRefusedError(f"{size} bytes is above policy.max_input_bytes={max_bytes}")


def _open_bounded(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int):
    if _is_http(fs):
        # fsspec's HTTP info() reports every failure, an outage too, as "not found": stream one GET
        # instead (a given size skips the HEAD; block size 0 streams), which raises 404 and 5xx apart.
        return fs.open(path, "rb", block_size=0, size=max_bytes + 1)
    return open(path, "rb") if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")


def _read_up_to(handle, n: int) -> bytes:
    """Up to `n` bytes: a stream's read() may return less than asked before its end."""
    chunks, total = [], 0
    while total < n and (chunk := handle.read(n - total)):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def under(uri: str, roots: list[str]) -> bool:
    """Whether `uri` lies inside one of `roots` (URI prefixes), compared after normalising both:
    local paths resolved (symlinks, '..'), other paths with '..' and '.' folded."""
    protocol, path = _normalised(uri)
    for root in roots:
        root_protocol, root_path = _normalised(root)
        if protocol == root_protocol and (path == root_path or path.startswith(root_path.rstrip("/") + "/")):
            return True
    return False


def _normalised(uri: str) -> tuple[str, str]:
    protocol, path = location(uri)
    return protocol, path if protocol == "file" else posixpath.normpath(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object so that readers see either nothing or all of it.

    Object stores publish a PUT atomically; on a local disk the bytes go to a
    temporary name in the same folder first and are renamed into place.
    """
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Create the object `uri` holding `data` unless the name is taken: True when this call created it,
    False when something was already there. Readers see nothing or all of `data`.

    Atomic on a local disk (the bytes go to a temporary name, then a hard link, which fails when the name
    is taken) and on S3 (PutObject with `If-None-Match: *`, which s3fs sends for mode="create").
    fsspec's other filesystems mostly check for the name and then write, which is not atomic: callers
    that need a single winner read back what they wrote. An S3 PUT retried after a lost response can
    find its own object and answer False, so callers read back in that case too.
    """
    fs, path = filesystem(uri)
    if not isinstance(fs, LocalFileSystem):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fs.pipe_file(tmp, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem (FAT, some network mounts): O_EXCL, briefly partial
        try:
            with open(path, "xb") as handle:
                handle.write(data)
        except FileExistsError:
            return False
    finally:
        os.remove(tmp)
    return True


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Full URIs of the files directly under `uri` ending in `suffix`; empty if it does not exist."""
    fs, path = filesystem(uri)
    fs.invalidate_cache(path)  # listings are cached per process; other workers may have written since
    if not fs.exists(path):
        return []
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = [p for p in fs.ls(path, detail=False) if p.endswith(suffix)]
    if isinstance(fs, LocalFileSystem) and "://" not in uri:
        return sorted(found)
    return sorted(f"{protocol}://{p}" if "://" not in p else p for p in found)


def read_parquet(uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The Parquet file at `uri`; with `columns`, only those of them the file has (an older file may lack some)."""
    if columns is None:
        return pq.read_table(io.BytesIO(read_bytes(uri)))
    file = pq.ParquetFile(io.BytesIO(read_bytes(uri)))
    have = set(file.schema_arrow.names)
    return file.read(columns=[c for c in columns if c in have])


def write_parquet(table: pa.Table, uri: str) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    write_bytes(uri, sink.getvalue())


def read_parquet_folder(uri: str) -> pa.Table | None:
    """All `*.parquet` files directly under `uri` as one table; None when there are none."""
    tables = [read_parquet(f) for f in list_files(uri, ".parquet")]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def delete(uri: str) -> None:
    """Remove one object; a missing one is not an error (deletes are retried)."""
    fs, path = filesystem(uri)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def location(uri: str) -> tuple[str, str]:
    """(protocol, absolute normalised path) of a URI, for comparing locations across spellings."""
    fs, path = filesystem(uri)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if isinstance(fs, LocalFileSystem):
        protocol, path = "file", posixpath.realpath(path)
    return protocol, path.rstrip("/")


def overlaps(a: str, b: str) -> bool:
    """Whether one URI lies inside the other (or they are the same place)."""
    (pa_, a_path), (pb, b_path) = location(a), location(b)
    if pa_ != pb:
        return False
    return a_path == b_path or a_path.startswith(b_path + "/") or b_path.startswith(a_path + "/")


def probe_writable(uri: str) -> None:
    """Fail now, not in an hour, when `uri` cannot be written (bad bucket, credentials, endpoint).

    Object stores get a small object written and deleted; a local path is checked without
    creating anything, so a dry run leaves no trace.
    """
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{existing} is not a writable folder")
        # Permission bits do not tell everything (procfs, read-only mounts): create a file and remove it.
        probe = os.path.join(existing, f".diffgen-probe-{uuid.uuid4().hex}")
        with open(probe, "xb"):
            pass
        os.remove(probe)
        return
    probe = join(uri, f".diffgen-probe-{uuid.uuid4().hex}")
    write_bytes(probe, b"probe")
    delete(probe)
