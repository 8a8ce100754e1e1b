"""Labelled real sets: class subfolders or Parquet, listed without decoding; bad files named."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffgen.metrics.labelled_set import LabelledSetError, open_labelled_set


def _png(color: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (color, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_class_subfolders(tmp_path):
    for label, n in (("circle", 3), ("star", 2)):
        (tmp_path / label).mkdir()
        for i in range(n):
            (tmp_path / label / f"{i}.png").write_bytes(_png(10 * i))
    (tmp_path / "README.txt").write_text("not a class")
    real = open_labelled_set(str(tmp_path))
    assert real.layout == "folders" and real.counts() == {"circle": 3, "star": 2}
    loaded = real.load()
    assert len(loaded.images) == 5 and loaded.images[0].shape == (8, 8, 3) and not loaded.warnings


def test_parquet_with_label_and_image_columns(tmp_path):
    table = pa.table({"image": [_png(1), _png(2), _png(3, size=16)], "shape": ["a", "b", "a"]})
    pq.write_table(table, tmp_path / "real.parquet")
    real = open_labelled_set(str(tmp_path / "real.parquet"), label_column="shape")
    assert real.counts() == {"a": 2, "b": 1}
    loaded = real.load()
    assert loaded.labels == ["a", "b", "a"]
    assert "mixed image sizes" in loaded.warnings[0] and "real.parquet#row=2 is 16x16" in loaded.warnings[0]
    with pytest.raises(LabelledSetError, match="has no column 'label'"):
        open_labelled_set(str(tmp_path / "real.parquet"))


def test_unreadable_image_and_empty_set_are_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.png").write_bytes(b"not a png")
    real = open_labelled_set(str(tmp_path))
    with pytest.raises(LabelledSetError, match=r"a/bad.png cannot be read"):
        real.load()
    with pytest.raises(LabelledSetError, match="does not exist"):
        open_labelled_set(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelledSetError, match="holds no labelled images"):
        open_labelled_set(str(tmp_path / "empty"))
    _ = np  # images are checked as arrays above


def test_keys_name_each_image_inside_the_set_so_a_copy_elsewhere_splits_the_same(tmp_path):
    for root in ("here", "there/deeper"):
        for label in ("a", "b"):
            (tmp_path / root / label).mkdir(parents=True)
            (tmp_path / root / label / "0.png").write_bytes(_png(1))
    here, there = open_labelled_set(str(tmp_path / "here")), open_labelled_set(str(tmp_path / "there/deeper"))
    assert here.keys == there.keys == ("a/0.png", "b/0.png") and here.names != there.names
    assert here.load().keys == ["a/0.png", "b/0.png"]
    pq.write_table(pa.table({"image": [_png(1), _png(2)], "label": ["a", "b"]}), tmp_path / "here" / "r.parquet")
    assert open_labelled_set(str(tmp_path / "here" / "r.parquet")).keys == ("r.parquet#row=0", "r.parquet#row=1")
