"""A labelled real image set, the test bed of the utility score: a folder of class subfolders
(`real/circle/*.png`, `real/star/*.png`: the subfolder is the label), or Parquet with an encoded-image
column and a label column (one file, or a folder of them), on any fsspec URI.

`open_labelled_set` lists the set and reads its labels without decoding an image, so a wrong URI,
a missing column or too few classes fails in a second; `LabelledSet.load` decodes every image and
names the first file that cannot be read. Images of different sizes are allowed (the CLIP processor
resizes them all the same way) but reported, since a set of mixed sizes usually means mixed sources.
"""

from __future__ import annotations

import io
import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from diffgen.dataset import storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class LabelledSetError(ValueError):
    """A labelled set that cannot serve as a test set; the message names the file, column or class."""


@dataclass
class LabelledImages:
    """Decoded images of a labelled set, in its stable order, with what was noticed reading them."""

    names: list[str]
    keys: list[str]  # each image's name inside the set, whatever the set's location
    labels: list[str]
    images: list[np.ndarray]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LabelledSet:
    uri: str
    layout: str  # "folders" | "parquet"
    names: tuple[str, ...]  # full URIs, for messages
    keys: tuple[str, ...]  # `<label>/<file>` or `<parquet file>#row=<n>`: what a seeded split hashes, so the
    # same set gives the same split wherever it lies (a checkout, a copy, a bucket)
    labels: tuple[str, ...]
    files: tuple[str, ...]  # the image files (folders) or the Parquet files
    image_column: str

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def load(self) -> LabelledImages:
        """Decode every image (RGB); a file that cannot be read raises, naming it."""
        names, images = [], []
        for name, data in self._encoded():
            try:
                with Image.open(io.BytesIO(data)) as image:
                    images.append(np.asarray(image.convert("RGB")))
            except Exception as e:  # PIL raises many unrelated types for damaged files
                raise LabelledSetError(f"real image {name} cannot be read: {type(e).__name__}: {e}") from None
            names.append(name)
        loaded = LabelledImages(names, list(self.keys), list(self.labels), images)
        sizes = Counter(a.shape[:2] for a in images)
        if len(sizes) > 1:
            (common, _), *_ = sizes.most_common()
            odd = next(i for i, a in enumerate(images) if a.shape[:2] != common)
            h, w = images[odd].shape[:2]
            loaded.warnings.append(
                f"mixed image sizes in {self.uri}: {len(sizes)} sizes, most {common[1]}x{common[0]}, but "
                f"{names[odd]} is {w}x{h}; the backbone resizes them all"
            )
        return loaded

    def _encoded(self) -> Iterator[tuple[str, bytes]]:
        if self.layout == "folders":
            for name in self.files:
                yield name, storage.read_bytes(name)
            return
        for f in self.files:
            table = _read_table(f, [self.image_column])
            for row, value in enumerate(table.column(self.image_column).to_pylist()):
                data = value.get("bytes") if isinstance(value, dict) else value  # Hugging Face image structs
                if not isinstance(data, bytes):
                    raise LabelledSetError(f"real image {f}#row={row}: column '{self.image_column}' holds no bytes")
                yield f"{f}#row={row}", data


def _read_table(uri: str, columns: list[str]):
    fs, path = storage.filesystem(uri)
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            missing = [c for c in columns if c not in parquet.schema_arrow.names]
            if missing:
                raise LabelledSetError(
                    f"real set file {uri} has no column '{missing[0]}' (columns: {', '.join(parquet.schema_arrow.names)})"
                )
            return parquet.read(columns=columns)
    except LabelledSetError:
        raise
    except Exception as e:  # fsspec and pyarrow raise their own types for unreadable files
        raise LabelledSetError(f"real set file {uri} is not readable Parquet: {type(e).__name__}: {e}") from None


def open_labelled_set(uri: str, *, label_column: str = "label", image_column: str = "image") -> LabelledSet:
    """List a labelled set and read its labels (no image is decoded)."""
    if uri.rstrip("/").endswith(".parquet"):
        if not storage.exists(uri):
            raise LabelledSetError(f"real set {uri} does not exist")
        return _parquet_set(uri, [uri], label_column, image_column)
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        raise LabelledSetError(f"real set {uri} does not exist")
    entries = [e for e in storage.list_files(uri) if not posixpath.basename(e.rstrip("/")).startswith(".")]
    parquets = [e for e in entries if e.endswith(".parquet")]
    folders = [e for e in entries if fs.isdir(storage.filesystem(e)[1])]
    if parquets and not folders:
        return _parquet_set(uri, parquets, label_column, image_column)
    names, keys, labels = [], [], []
    for folder in folders:
        label = posixpath.basename(folder.rstrip("/"))
        for f in storage.list_files(folder):
            if f.lower().endswith(IMAGE_SUFFIXES):
                names.append(f), keys.append(f"{label}/{posixpath.basename(f)}"), labels.append(label)
    if not names:
        raise LabelledSetError(
            f"real set {uri} holds no labelled images: expected class subfolders of {', '.join(IMAGE_SUFFIXES)} "
            "files (the subfolder is the label), or Parquet with an image and a label column"
        )
    return LabelledSet(uri, "folders", tuple(names), tuple(keys), tuple(labels), tuple(names), image_column)


def _parquet_set(uri: str, files: list[str], label_column: str, image_column: str) -> LabelledSet:
    names, keys, labels = [], [], []
    for f in files:
        table = _read_table(f, [label_column, image_column] if label_column != image_column else [label_column])
        for row, label in enumerate(table.column(label_column).to_pylist()):
            if label is None:
                raise LabelledSetError(f"real set file {f} row {row}: column '{label_column}' is empty")
            names.append(f"{f}#row={row}"), labels.append(str(label))
            keys.append(f"{posixpath.basename(f)}#row={row}")
    if not names:
        raise LabelledSetError(f"real set {uri} holds no rows")
    return LabelledSet(uri, "parquet", tuple(names), tuple(keys), tuple(labels), tuple(files), image_column)
