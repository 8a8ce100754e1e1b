"""The output layout: a contract other tools parse (README, "Output layout"). Every name under OUTPUT/
is spelled here once; every writer and reader of an output takes it from here.

    images/<rr>/<record_id>.png    one PNG per written image; <rr> = the record id's first 2 hex characters
    index/part-<hash>.parquet      the index, one shard per written batch; <hash> of its record ids
    rejects/part-<hash>.parquet    manifest rows skipped by policy.invalid_rows: skip
    qc/report.json, qc/report.html the QC report
    qc/utility.json                the utility score (train on synthetic, test on real)
    qc/expectations/<suite>.json   Great Expectations results (manifest, index)
    webdataset/shard-<n>.tar       the WebDataset copy, and webdataset/shards.parquet
    webdataset/<column>=<value>/shard-<n>.tar  with webdataset.split_by: <column>, one folder per value
    quarantine/index/              unreadable index shards moved aside
    metadata.parquet               the written images as a Hugging Face imagefolder: file_name + labels
    metadata-<n>.parquet           ... one per value of a `split` column
    README.md                      the dataset card (`load_dataset(OUTPUT)` reads its configs: header)
    run.json                       the run summary, written last
    .diffgen-lease-<epoch>.json    the lease of the run writing the output

A sweep (`diffgen sweep`) writes one output per grid point under its own output:

    points/<name>/                 one point's output (the layout above); <name> from its settings
    sweep.json, sweep.html         every point's scores and the best point per metric
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

IMAGES_DIR = "images"
IMAGES_GLOB = f"{IMAGES_DIR}/*/*.png"
INDEX_DIR = "index"
REJECTS_DIR = "rejects"
QC_DIR = "qc"
EXPECTATIONS_DIR = f"{QC_DIR}/expectations"
REPORT_JSON = f"{QC_DIR}/report.json"
REPORT_HTML = f"{QC_DIR}/report.html"
UTILITY_JSON = f"{QC_DIR}/utility.json"
WEBDATASET_DIR = "webdataset"
WEBDATASET_SHARDS = f"{WEBDATASET_DIR}/shards.parquet"
QUARANTINE_DIR = "quarantine"
RUN_FILE = "run.json"
METADATA_PARQUET = "metadata.parquet"
DATASET_CARD = "README.md"
LEASE_PREFIX = ".diffgen-lease-"
SWEEP_POINTS_DIR = "points"
SWEEP_JSON = "sweep.json"
SWEEP_HTML = "sweep.html"


def _digest(names: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:20]


def image_key(record_id: str) -> str:
    """`images/ab/abcdef....png`: a short hash prefix spreads objects over S3 key prefixes."""
    return f"{IMAGES_DIR}/{record_id[:2]}/{record_id}.png"


def index_shard(record_ids: Iterable[str]) -> str:
    """The index shard of these records, named by them: a retried batch overwrites its own shard."""
    return f"{INDEX_DIR}/part-{_digest(record_ids)}.parquet"


def rejects_file(row_indices: Iterable[int]) -> str:
    """The skipped manifest rows, named by their indices so a re-run rewrites the same file."""
    return f"{REJECTS_DIR}/part-{_digest_ordered(map(str, row_indices))}.parquet"


def _digest_ordered(names: Iterable[str]) -> str:
    return hashlib.sha256(",".join(names).encode()).hexdigest()[:20]


def expectations_file(suite: str) -> str:
    return f"{EXPECTATIONS_DIR}/{suite}.json"


def webdataset_shard(number: int, split: tuple[str, str] | None = None) -> str:
    """A WebDataset shard's path inside `WEBDATASET_DIR` (as `shards.parquet` records it); with webdataset.split_by,
    inside its (column, value)'s folder, `<column>=<value>/`: Hive's partition naming, which DuckDB and pyarrow
    read as a column, and which `datasets` does not take for a split folder (a folder named `train` it would)."""
    name = f"shard-{number:06d}.tar"
    return name if split is None else f"{split[0]}={split[1]}/{name}"


def split_metadata(number: int) -> str:
    """The imagefolder metadata of one split (numbered: a split's name in a path makes `datasets` guess splits)."""
    return f"metadata-{number}.parquet"


def quarantined_index_shard(name: str) -> str:
    return f"{QUARANTINE_DIR}/{INDEX_DIR}/{name}"


def lease_file(epoch: int) -> str:
    return f"{LEASE_PREFIX}{epoch:012d}.json"


def sweep_point(name: str) -> str:
    """A sweep point's output, inside the sweep's output."""
    return f"{SWEEP_POINTS_DIR}/{name}"
