"""The output as a Hugging Face `imagefolder` dataset, so `datasets.load_dataset(OUTPUT)` gives its images
with the right labels instead of a class per `images/<rr>/` folder.

    OUTPUT/metadata.parquet         one row per written image: `file_name` (relative to OUTPUT), the record's
                                    id, prompt and seed, and every pass-through manifest column (labels)
    OUTPUT/metadata-<n>.parquet     with a `split` column: the same rows, one file per split value
    OUTPUT/README.md                the dataset card: counts, labels, model, provenance, and a `configs:`
                                    header that names the splits for `load_dataset(OUTPUT)`

`datasets`' imagefolder reads a root `metadata.parquet` whose `file_name` is relative to it and then takes
its rows as the examples (rejected and failed attempts have no row, so they are not loaded), its other
columns as features. `load_dataset("imagefolder", data_dir=OUTPUT)` reads the root file alone: one `train`
split. The card's `configs:` gives `load_dataset(OUTPUT)` one split per value of a `split` column, each split
reading its own `metadata-<n>.parquet` (split names never appear in a path, where `datasets` would take
them for split folders).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from diffgen.dataset import storage
from diffgen.dataset.layout import DATASET_CARD, IMAGES_GLOB, METADATA_PARQUET, image_key, split_metadata
from diffgen.schemas.record import INDEX_COLUMNS, RecordStatus

# The index columns an example carries besides the image and the pass-through manifest columns.
EXAMPLE_COLUMNS = ("record_id", "id", "sample_index", "prompt", "negative_prompt", "seed", "width", "height",
                   "clip_score", "sha256")  # fmt: skip
SPLIT_COLUMN = "split"
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # what `datasets` accepts as a split name


def metadata_table(index: pa.Table | None) -> pa.Table | None:
    """The written rows of an index as imagefolder metadata: `file_name` first, in record_id order."""
    if index is None:
        return None
    written = index.filter(pc.equal(index.column("status"), RecordStatus.WRITTEN.value)).sort_by("record_id")
    names = [image_key(r) for r in written.column("record_id").to_pylist()]
    kept = [c for c in EXAMPLE_COLUMNS if c in written.column_names]
    passthrough = [c for c in written.column_names if c not in INDEX_COLUMNS and c != "file_name"]
    table = written.select(kept + passthrough)
    return table.add_column(0, "file_name", pa.array(names, pa.string()))


def splits(metadata: pa.Table) -> list[str] | None:
    """The values of the `split` column when every row has one `datasets` can name a split after, else None."""
    if SPLIT_COLUMN not in metadata.column_names:
        return None
    values = metadata.column(SPLIT_COLUMN).cast(pa.string()).to_pylist()
    if any(v is None or not _SPLIT_NAME.match(v) for v in values):
        return None
    return sorted(set(values))


def write(output: str, index: pa.Table | None, summary: dict[str, Any]) -> None:
    """Write metadata.parquet (and one file per split) and the dataset card; `summary` is run.json's content."""
    metadata = metadata_table(index)
    if metadata is None:
        return
    storage.write_parquet(metadata, storage.join(output, METADATA_PARQUET))
    names = splits(metadata) or []
    column = metadata.column(SPLIT_COLUMN).cast(pa.string()) if names else None
    for n, name in enumerate(names):
        storage.write_parquet(metadata.filter(pc.equal(column, name)), storage.join(output, split_metadata(n)))
    card_text = card(metadata, names, summary, model=_model_named(index))
    storage.write_bytes(storage.join(output, DATASET_CARD), card_text.encode("utf-8"))


def _model_named(index: pa.Table) -> str | None:
    """The model as the images' provenance names it (hub id or folder name, and weights hash), not a local path."""
    if "provenance" not in index.column_names:
        return None
    for text in index.column("provenance").to_pylist():
        if text:
            record = json.loads(text)
            return f"{record.get('model_id')} (weights sha256 {str(record.get('model_weights_sha256'))[:16]}...)"
    return None


def card(metadata: pa.Table, names: list[str], summary: dict[str, Any], model: str | None = None) -> str:
    """The dataset card: a `datasets` YAML header (configs, license) and what a reader needs to trust it."""
    if names:
        files = [{"split": name, "path": [split_metadata(n), IMAGES_GLOB]} for n, name in enumerate(names)]
        config = {"config_name": "default", "data_files": files,
                  "metadata_filenames": [split_metadata(n) for n in range(len(names))]}  # fmt: skip
    else:
        config = {"config_name": "default", "data_files": [{"split": "train", "path": [METADATA_PARQUET,
                                                                                       IMAGES_GLOB]}]}
    header = {"license": "unknown", "tags": ["synthetic", "diffgen"], "configs": [config]}
    job = summary.get("job") or {}
    counts = summary.get("counts") or {}
    model = model or (job.get("model") or {}).get("id", "?")
    sampler = job.get("sampler") or {}
    labels = [c for c in metadata.column_names if c not in EXAMPLE_COLUMNS and c != "file_name"]
    sizes = pc.value_counts(metadata.column(SPLIT_COLUMN).cast(pa.string())).to_pylist() if names else []
    split_sizes = ", ".join(f"{s['values']} ({s['counts']})" for s in sorted(sizes, key=lambda s: s["values"]))
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
        f"# {summary.get('run_id', 'diffgen output')}", "",
        "Synthetic images made by diffgen from a manifest of prompts; every written image carries "
        "an invisible watermark and its provenance (PNG iTXt `diffgen:provenance`, XMP "
        "`trainedAlgorithmicMedia`). Set `license` above before publishing it.", "",
        f"- images: {metadata.num_rows} ({counts.get('images_written', '?')} of {counts.get('images_expected', '?')} "
        f"asked for; status {summary.get('status', '?')})",
        f"- splits: {split_sizes or 'train (all)'}",
        f"- label columns: {', '.join(labels) or 'none'}",
        f"- model: {model}; scheduler {sampler.get('scheduler', '?')}, {sampler.get('steps', '?')} "
        f"steps, guidance {sampler.get('guidance_scale', '?')}",
        f"- manifest: {summary.get('manifest', '?')}; run {summary.get('run_id', '?')}, finished "
        f"{summary.get('finished_at', '?')}",
        "", "```python", "from datasets import load_dataset", 'ds = load_dataset("OUTPUT")  # this folder',
        "```", "",
    ]  # fmt: skip
    return "\n".join(lines)
