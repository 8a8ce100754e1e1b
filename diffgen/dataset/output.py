"""An output opened where it lives now: copied to another folder, synced to another bucket, mounted elsewhere.

The index records `image_uri`, where each image was written, and `image_path`, where it is inside the output
(`images/<rr>/<record_id>.png`). Opening an output resolves every written row's image against the root it is
opened from, so the index keeps pointing at the images after the folder moves. Outputs made before the
`image_path` column have the same layout: their paths come from the record ids.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from diffgen.dataset import storage
from diffgen.dataset.index import read_index
from diffgen.dataset.layout import image_key
from diffgen.schemas.record import RecordStatus


class NotAnOutputError(ValueError):
    """The URI holds no diffgen index."""


@dataclass(frozen=True)
class Output:
    root: str
    index: pa.Table
    """Every attempt, one row each; `image_uri` of a written row is its image under `root`."""

    @property
    def written(self) -> pa.Table:
        """The rows whose image was written: the dataset."""
        return self.index.filter(pc.equal(self.index.column("status"), RecordStatus.WRITTEN.value))

    def image_uri(self, record_id: str) -> str:
        return storage.join(self.root, image_key(record_id))

    def image_bytes(self, record_id: str) -> bytes:
        """The PNG as written (watermark, provenance and C2PA intact)."""
        return storage.read_bytes(self.image_uri(record_id))

    def read_image(self, record_id: str) -> Image.Image:
        """The image, decoded, as RGB."""
        with Image.open(io.BytesIO(self.image_bytes(record_id))) as image:
            return image.convert("RGB")


def open_output(uri: str) -> Output:
    """The output at `uri`, its index's `image_uri` resolved against `uri`; `NotAnOutputError` if it has no index."""
    index = read_index(uri)
    if index is None:
        raise NotAnOutputError(f"{uri}: no index/ folder; not a diffgen output (or not one yet)")
    written = pc.equal(index.column("status"), RecordStatus.WRITTEN.value).to_pylist()
    paths = [image_key(rid) if ok else None for rid, ok in zip(index.column("record_id").to_pylist(), written)]
    uris = [None if p is None else storage.join(uri, p) for p in paths]
    for name, values in (("image_path", paths), ("image_uri", uris)):
        column = pa.array(values, pa.string())
        if name in index.column_names:
            index = index.set_column(index.column_names.index(name), name, column)
        else:
            index = index.append_column(name, column)
    return Output(root=uri, index=index)
