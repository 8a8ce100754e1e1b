"""Inputs at the boundary: string-like Arrow types are accepted, and input images that hang, stall or
come from a server that is down cost only their own row, with the right status."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffgen.dataset import storage
from diffgen.pipelines.generate import run
from diffgen.pipelines.plan import plan
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job


@pytest.mark.parametrize(
    "text_type", [pa.large_string(), pa.string_view(), pa.dictionary(pa.int32(), pa.string())], ids=str
)
def test_every_arrow_string_type_is_accepted_for_id_prompt_and_labels(tmp_path, tiny_sd, text_type):
    table = pa.table({"id": ["a", "b"], "prompt": ["a cat", "a dog"], "label": ["cat", "dog"]})
    table = pa.table({name: table.column(name).cast(text_type) for name in table.column_names})
    pq.write_table(table, tmp_path / "m.parquet")
    spec = load_job_spec(write_job(tmp_path / "job.yaml", tiny_sd), manifest=str(tmp_path / "m.parquet"),
                         output=str(tmp_path / "out"))  # fmt: skip
    p = plan(spec)
    assert p.records.column("id").to_pylist() == ["a", "b"] and p.records.schema.field("prompt").type == pa.string()
    assert p.todo.num_rows == 2


def test_a_fifo_and_a_server_that_is_down_cost_only_their_rows(ray_cluster, tmp_path, tiny_sd, http_server):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(good)
    os.mkfifo(tmp_path / "pipe.png")
    rows = [
        {"id": "good", "prompt": "a cat", "init_image": str(good)},
        {"id": "fifo", "prompt": "a cat", "init_image": str(tmp_path / "pipe.png")},
        {"id": "down", "prompt": "a cat", "init_image": f"{http_server}/down.png"},
        {"id": "plain", "prompt": "a dog"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    job = write_job(tmp_path / "job.yaml", tiny_sd, compute={"batch_size": 4}, policy={"max_lost_fraction": 0.5})
    out = tmp_path / "out"
    summary = run(load_job_spec(job, manifest=str(tmp_path / "m.parquet"), output=str(out)))
    c = summary.counts
    assert (c.images_expected, c.images_written, c.rejected, c.failed) == (4, 2, 1, 1)
    index = {r["id"]: r for r in storage.read_parquet_folder(str(out / "index")).to_pylist()}
    assert index["fifo"]["status"] == "rejected" and "not a regular file" in index["fifo"]["error"]
    # A server error is an outage, not a bad input: `failed`, so a re-run tries the row again.
    assert index["down"]["status"] == "failed" and "503" in index["down"]["error"]
    assert plan(load_job_spec(job, manifest=str(tmp_path / "m.parquet"), output=str(out))).todo.num_rows == 1
