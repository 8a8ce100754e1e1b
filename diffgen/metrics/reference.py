"""Reference statistics for FID: FeatureStats of a reference image set, computed once and cached.

A reference is any fsspec URI holding either image files (PNG/JPEG, directly in a folder)
or Parquet with an encoded-image column (one `.parquet` file, or a folder of them when it
holds no image files). Images are decoded to RGB; all must share one size, because resizing
from different sizes changes the statistics (a clean-fid lesson), and silently mixing them
would make the number irreproducible.

The statistics are cached as an artifact next to the reference,
`<folder>/.diffgen-fid-stats-<backbone>-<resize>.npz` (for a Parquet file, beside it with its
name inside), and its perceptual hashes (for duplicate checks) as `.diffgen-phash.parquet`, or under `cache_uri` when the reference must stay read-only. A cached file is
reused when its mode matches and its count equals the number of reference images now present;
a reference whose images were replaced one for one needs `refresh=True`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from diffgen.dataset import storage
from diffgen.metrics.frechet import FeatureStats, FeatureStatsError
from diffgen.metrics.image_checks import phash
from diffgen.metrics.reservoir import Reservoir, ReservoirError, bottom_k

if TYPE_CHECKING:
    from diffgen.metrics.backbones import Backbone

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_PROGRESS_EVERY = 5000  # images between progress lines


class ReferenceSetError(ValueError):
    """A reference set or stats file that cannot give FID statistics; the message names the file."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _cache_uri(reference_uri: str, what: str, cache_uri: str | None) -> str:
    ref = reference_uri.rstrip("/")
    if cache_uri is not None:
        # One cache folder serves many references: the reference's URI picks the file.
        key = hashlib.sha256(ref.encode()).hexdigest()[:12]
        return storage.join(cache_uri, f"diffgen-{key}-{what}")
    if ref.endswith(".parquet"):
        parent, name = posixpath.split(ref)
        return storage.join(parent, f".diffgen-{_slug(name)}-{what}")
    return storage.join(ref, f".diffgen-{what}")


def stats_cache_uri(reference_uri: str, backbone: Backbone, cache_uri: str | None = None) -> str:
    """Where the statistics of `reference_uri` under `backbone` are cached."""
    return _cache_uri(reference_uri, f"fid-stats-{_slug(backbone.name)}-{_slug(backbone.resize)}.npz", cache_uri)


def hashes_cache_uri(reference_uri: str, cache_uri: str | None = None) -> str:
    """Where the perceptual hashes of `reference_uri` are cached."""
    return _cache_uri(reference_uri, "phash.parquet", cache_uri)


def load_stats(uri: str, backbone: Backbone | None = None) -> FeatureStats:
    """Statistics from a stats file; with `backbone`, refuses a file computed in another mode."""
    try:
        stats = FeatureStats.from_bytes(storage.read_bytes(uri))
    except FileNotFoundError:
        raise ReferenceSetError(f"stats file {uri} does not exist") from None
    except FeatureStatsError as e:
        raise ReferenceSetError(f"stats file {uri}: {e}") from None
    if backbone is not None:
        have = (stats.backbone, stats.resize, stats.dim)
        want = (backbone.name, backbone.resize, backbone.dim)
        if have != want:
            raise ReferenceSetError(
                f"stats file {uri} holds backbone/resize/dim {have}, but this run extracts {want}; "
                "recompute the reference statistics with this backbone"
            )
    return stats


def check_reference(uri: str, image_column: str = "image") -> int:
    """How many images the reference set at `uri` holds; raises `ReferenceSetError` when it holds
    none or does not exist. Lists the files (and reads Parquet footers), never the images."""
    source = _Source(uri, image_column)
    if source.count == 0:
        raise ReferenceSetError(f"reference {uri} holds no images")
    return source.count


def reference_stats(
    uri: str,
    backbone: Backbone,
    *,
    cache_uri: str | None = None,
    image_column: str = "image",
    batch_size: int = 64,
    refresh: bool = False,
) -> FeatureStats:
    """The reference set's FeatureStats under `backbone`, from the cache when it is current."""
    source = _Source(uri, image_column)
    cache = stats_cache_uri(uri, backbone, cache_uri)
    if not refresh and storage.exists(cache):
        try:
            cached = load_stats(cache, backbone)
        except ReferenceSetError as e:
            log.warning("ignoring cached reference statistics: %s", e)
        else:
            if cached.count == source.count:
                log.info("reference statistics for %s from cache %s (%d images)", uri, cache, cached.count)
                return cached
            log.info("cache %s holds %d images, the reference %d: recomputing", cache, cached.count, source.count)

    log.info("computing reference statistics for %s: %d images, backbone %s", uri, source.count, backbone.name)
    stats = FeatureStats(backbone.name, backbone.resize, backbone.dim)
    first: tuple[str, tuple[int, ...]] | None = None
    batch: list[np.ndarray] = []
    for name, image in source.images():
        if first is None:
            first = (name, image.shape)
        elif image.shape != first[1]:
            raise ReferenceSetError(
                f"reference images differ in size: {first[0]} is {first[1][1]}x{first[1][0]} but {name} is "
                f"{image.shape[1]}x{image.shape[0]}; resize the reference set to one size first"
            )
        batch.append(image)
        if len(batch) == batch_size:
            stats.update(backbone.extract(batch))
            batch = []
            if stats.count % _PROGRESS_EVERY < batch_size:
                log.info("reference statistics: %d/%d images", stats.count, source.count)
    if batch:
        stats.update(backbone.extract(batch))
    if stats.count == 0:
        raise ReferenceSetError(f"reference {uri} holds no images")

    try:
        storage.write_bytes(cache, stats.to_bytes())
        log.info("cached reference statistics at %s", cache)
    except Exception as e:  # any filesystem refuses in its own way; the statistics are still good
        log.warning("cannot cache reference statistics at %s (%s); pass a writable cache_uri", cache, e)
    return stats


def reference_sample(
    uri: str,
    backbone: Backbone,
    *,
    capacity: int,
    seed: int,
    cache_uri: str | None = None,
    image_column: str = "image",
    batch_size: int = 64,
) -> Reservoir:
    """A seeded sample of at most `capacity` of the reference's feature vectors (for KID, CMMD and
    precision/recall), keyed by each image's name inside the reference; cached like the statistics.
    Only the chosen images are embedded."""
    source = _Source(uri, image_column)
    what = f"fid-sample-{_slug(backbone.name)}-{_slug(backbone.resize)}-{capacity}-{seed}.npz"
    cache = _cache_uri(uri, what, cache_uri)
    if storage.exists(cache):
        try:
            cached = Reservoir.from_bytes(storage.read_bytes(cache))
        except ReservoirError as e:
            log.warning("ignoring cached reference sample %s: %s", cache, e)
        else:
            if cached.offered == source.count and cached.backbone == backbone.name:
                return cached
    prefix = uri.rstrip("/") + "/"
    names = [name.removeprefix(prefix) for name, _ in source.names()]
    chosen = set(bottom_k(names, seed, capacity))
    sample = Reservoir(backbone.name, backbone.resize, backbone.dim, capacity=capacity, seed=seed)
    batch: list[tuple[str, np.ndarray]] = []
    for name, image in source.images(only=chosen, prefix=prefix):
        batch.append((name, image))
        if len(batch) == batch_size:
            sample.update([n for n, _ in batch], backbone.extract([a for _, a in batch]))
            batch = []
    if batch:
        sample.update([n for n, _ in batch], backbone.extract([a for _, a in batch]))
    sample.offered = source.count
    try:
        storage.write_bytes(cache, sample.to_bytes())
    except Exception as e:  # as for the statistics: the sample is still good
        log.warning("cannot cache the reference sample at %s (%s)", cache, e)
    return sample


def reference_hashes(
    uri: str, *, cache_uri: str | None = None, image_column: str = "image", refresh: bool = False
) -> tuple[list[str], list[int]]:
    """(name, 64-bit pHash) of every reference image, for duplicate checks; cached like the statistics."""
    source = _Source(uri, image_column)
    cache = hashes_cache_uri(uri, cache_uri)
    if not refresh and storage.exists(cache):
        try:
            cached = storage.read_parquet(cache)
            names, hashes = cached.column("name").to_pylist(), cached.column("phash").to_pylist()
        except Exception as e:  # a damaged cache is recomputed, whatever the reader raises
            log.warning("ignoring cached reference hashes %s: %s", cache, e)
        else:
            if len(names) == source.count:
                return names, hashes
    names, hashes = [], []
    for name, image in source.images():
        names.append(name)
        hashes.append(phash(image))
    table = pa.table({"name": pa.array(names, pa.string()), "phash": pa.array(hashes, pa.uint64())})
    try:
        storage.write_parquet(table, cache)
    except Exception as e:  # as for the statistics: the hashes are still good
        log.warning("cannot cache reference hashes at %s (%s)", cache, e)
    return names, hashes


class _Source:
    """The reference's image files or Parquet files, and how many images they hold."""

    def __init__(self, uri: str, image_column: str):
        self.uri = uri
        self.image_column = image_column
        if uri.rstrip("/").endswith(".parquet"):
            if not storage.exists(uri):
                raise ReferenceSetError(f"reference {uri} does not exist")
            self.files, self.parquet = [uri], True
        else:
            # The caches written beside a reference are not part of it.
            listing = [f for f in storage.list_files(uri) if not posixpath.basename(f).startswith(".diffgen-")]
            images = [f for f in listing if f.lower().endswith(IMAGE_SUFFIXES)]
            parquets = [f for f in listing if f.endswith(".parquet")]
            if not images and not parquets:
                raise ReferenceSetError(
                    f"reference {uri} holds no images (looked for {', '.join(IMAGE_SUFFIXES)} files and .parquet)"
                )
            self.files, self.parquet = (images, False) if images else (parquets, True)
        self.count = sum(self._rows(f) for f in self.files) if self.parquet else len(self.files)

    def _rows(self, uri: str) -> int:
        with _parquet(uri) as parquet:
            return parquet.metadata.num_rows

    def names(self) -> Iterator[tuple[str, None]]:
        """(name, None) for every reference image, in the order of `images`, decoding nothing."""
        if not self.parquet:
            yield from ((f, None) for f in self.files)
            return
        for f in self.files:
            yield from ((f"{f}#row={row}", None) for row in range(self._rows(f)))

    def images(self, only: set[str] | None = None, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """(name, RGB uint8 array) for every reference image, in a stable order; with `only`, just the
        images whose name, less `prefix`, is in it (returned under that shorter name)."""
        if only is not None:
            for name, image in self.images():
                if name.removeprefix(prefix) in only:
                    yield name.removeprefix(prefix), image
            return
        if not self.parquet:
            for f in self.files:
                yield f, _decode(storage.read_bytes(f), f)
            return
        for f in self.files:
            with _parquet(f) as parquet:
                names = parquet.schema_arrow.names
                if self.image_column not in names:
                    raise ReferenceSetError(
                        f"reference file {f} has no column '{self.image_column}' (columns: {', '.join(names)})"
                    )
                row = 0
                for batch in parquet.iter_batches(columns=[self.image_column], batch_size=256):
                    for value in batch.column(0).to_pylist():
                        name = f"{f}#row={row}"
                        row += 1
                        # Hugging Face datasets store images as {"bytes": ..., "path": ...}.
                        data = value.get("bytes") if isinstance(value, dict) else value
                        if not isinstance(data, bytes):
                            raise ReferenceSetError(
                                f"reference image {name}: column '{self.image_column}' holds no image bytes"
                            )
                        yield name, _decode(data, name)


@contextmanager
def _parquet(uri: str) -> Iterator[pq.ParquetFile]:
    # Streamed row group by row group: a reference Parquet can be far larger than memory.
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (OSError, pa.ArrowInvalid) as e:
            raise ReferenceSetError(f"reference file {uri} is not readable Parquet: {e}") from None
        yield parquet


def _decode(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as e:  # PIL raises many unrelated types for damaged files
        raise ReferenceSetError(f"reference image {name} cannot be read: {type(e).__name__}: {e}") from None
