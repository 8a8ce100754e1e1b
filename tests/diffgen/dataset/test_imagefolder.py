"""An output loads with Hugging Face `datasets` as an imagefolder: the right images with their labels and splits."""

import hashlib
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from diffgen.dataset import storage
from diffgen.dataset.imagefolder import metadata_table, write
from diffgen.dataset.layout import DATASET_CARD, IMAGES_GLOB, METADATA_PARQUET, split_metadata
from tests.diffgen.dataset.test_webdataset import _index


def _labelled(out: str, written: int = 12) -> pa.Table:
    """An index with a `shape` label and a `split` column; each image's colour encodes its row number."""
    index = _index(out, written=written)
    n = index.num_rows
    index = index.append_column("shape", pa.array([("circle", "square", "star")[i % 3] for i in range(n)]))
    return index.append_column("split", pa.array(["validation" if i % 4 == 0 else "train" for i in range(n)]))


SUMMARY = {"run_id": "cats", "status": "complete", "manifest": "s3://b/m.parquet",
           "counts": {"images_written": 12, "images_expected": 12}, "job": {"model": {"id": "micro-sd"}}}  # fmt: skip


def _expected(index: pa.Table) -> dict[str, tuple[str, str, str]]:
    """record_id -> (shape, split, sha256 of the PNG's pixels) of the written rows."""
    out = {}
    for row in index.to_pylist():
        if row["status"] == "written":
            with Image.open(row["image_uri"]) as image:
                out[row["record_id"]] = (row["shape"], row["split"], hashlib.sha256(image.tobytes()).hexdigest())
    return out


def _loaded(dataset) -> dict[str, tuple[str, str, str]]:
    return {r["record_id"]: (r["shape"], r["split"], hashlib.sha256(r["image"].tobytes()).hexdigest())
            for r in dataset}  # fmt: skip


def test_metadata_has_relative_file_names_and_written_rows_only(tmp_path):
    out = str(tmp_path / "out")
    index = _labelled(out)
    metadata = metadata_table(index)
    assert metadata.column_names[0] == "file_name" and metadata.num_rows == 12
    assert {"shape", "split", "label", "prompt", "seed", "record_id"} <= set(metadata.column_names)
    for row in metadata.to_pylist():
        assert not row["file_name"].startswith("/") and os.path.isfile(os.path.join(out, row["file_name"]))


def test_load_dataset_gives_the_images_with_their_labels_and_splits(tmp_path):
    from datasets import load_dataset

    out = str(tmp_path / "out")
    index = _labelled(out)
    write(out, index, SUMMARY)
    expected = _expected(index)
    assert {storage.exists(storage.join(out, n)) for n in (METADATA_PARQUET, split_metadata(0), DATASET_CARD)} == {True}

    # The imagefolder builder on the folder: one train split, every written image, its labels (not the hex folders).
    folder = load_dataset("imagefolder", data_dir=out, cache_dir=str(tmp_path / "c1"))
    assert list(folder) == ["train"] and _loaded(folder["train"]) == expected
    assert "label" in folder["train"].features and folder["train"].features["shape"].dtype == "string"

    # The folder itself: the card's configs give one split per value of `split`.
    splits = load_dataset(out, cache_dir=str(tmp_path / "c2"))
    assert sorted(splits) == ["train", "validation"]
    for name, part in splits.items():
        assert _loaded(part) == {k: v for k, v in expected.items() if v[1] == name}

    card = storage.read_bytes(storage.join(out, DATASET_CARD)).decode()
    assert card.startswith("---\nlicense: unknown\n") and "train (9), validation (3)" in card and "shape" in card
    assert "- model: micro-sd;" in card  # no provenance column here: the job's model id


def test_the_card_names_the_model_as_the_provenance_does(tmp_path):
    out = str(tmp_path / "out")
    index = _labelled(out, written=2)
    provenance = '{"model_id": "org/sd-finetune", "model_weights_sha256": "' + "ab" * 32 + '"}'
    index = index.append_column("provenance", pa.array([provenance] * index.num_rows))
    write(out, index, {**SUMMARY, "job": {"model": {"id": "/home/someone/models/sd"}}})
    card = storage.read_bytes(storage.join(out, DATASET_CARD)).decode()
    assert "- model: org/sd-finetune (weights sha256 abababababababab...)" in card and "/home/someone" not in card


def test_without_a_split_column_the_folder_is_one_train_split(tmp_path):
    from datasets import load_dataset

    out = str(tmp_path / "out")
    index = _labelled(out).drop_columns(["split"])
    write(out, index, SUMMARY)
    loaded = load_dataset(out, cache_dir=str(tmp_path / "c"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 12


def test_an_s3_output_loads(s3_bucket, tmp_path, monkeypatch):
    import datasets
    from datasets import load_dataset

    # The tests run with HF_HUB_OFFLINE=1, which `datasets` also applies to every remote URL; the S3 server here is
    # on loopback, and the Hub is still never asked (the builder is a packaged one, the files are named).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    out = f"{s3_bucket}/runs/hf"
    index = _labelled(out, written=5)
    write(out, index, SUMMARY)
    options = {"client_kwargs": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}}
    files = [storage.join(out, METADATA_PARQUET), storage.join(out, IMAGES_GLOB)]  # data_dir is local paths only
    loaded = load_dataset("imagefolder", data_files={"train": files}, storage_options=options, streaming=True,
                          split="train")  # fmt: skip
    rows = {r["record_id"]: (r["shape"], r["image"].size) for r in loaded}
    assert len(rows) == 5 and all(size[0] >= 24 for _, size in rows.values())
    assert {k: v[0] for k, v in rows.items()} == {r["record_id"]: r["shape"] for r in index.to_pylist()
                                                 if r["status"] == "written"}  # fmt: skip
