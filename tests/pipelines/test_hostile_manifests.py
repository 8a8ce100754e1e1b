"""Property test: hostile manifests either stop with a readable error or yield exactly their valid rows,
and nothing is ever written outside the output prefix."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffgen.pipelines.plan import plan
from diffgen.schemas.job import JobSpec
from diffgen.schemas.manifest import ManifestError
from diffgen.schemas.record import RecordStatus
from diffgen.stages.write import WriteStage

HOSTILE_IDS = st.one_of(
    st.text(min_size=0, max_size=40),
    st.sampled_from(["../../etc/passwd", "/abs/path", "a/../../b", "nul\x00id", "ctl\x1b[2J", "..", "/", "x" * 3000]),
)
ROW = st.fixed_dictionaries(
    {
        "id": st.one_of(st.none(), HOSTILE_IDS),
        "prompt": st.one_of(st.none(), st.just(""), st.just("  "), st.text(max_size=30)),
        "num_images": st.one_of(st.none(), st.integers(-3, 4), st.just(10**9)),
    }
)
SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("num_images", pa.int64())])


def _valid(row: dict) -> bool:
    n = 1 if row["num_images"] is None else row["num_images"]
    return (
        row["id"] is not None and 0 < len(row["id"]) <= 512
        and row["prompt"] is not None and row["prompt"].strip() != ""
        and 1 <= n <= 4
    )  # fmt: skip


def _files(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


@pytest.mark.parametrize("policy", ["skip", "fail"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=8))
def test_hostile_manifests(tmp_path_factory, tiny_sd, policy, rows):
    root = tmp_path_factory.mktemp("hostile")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), root / "m.parquet")
    spec = JobSpec.model_validate(
        {
            "run_id": "hostile",
            "model": {"id": str(tiny_sd)},
            "sampler": {"width": 8, "height": 8},
            "policy": {"invalid_rows": policy, "max_images_per_row": 4},
            "provenance": {"watermark": False},
            "manifest": str(root / "m.parquet"),
            "output": str(root / "out"),
        }
    )
    seen: set[str] = set()
    kept = []  # a row survives if valid and its id was not used by any earlier row
    for r in rows:
        if _valid(r) and r["id"] not in seen:
            kept.append(r)
        if r["id"] is not None:
            seen.add(r["id"])
    try:
        p = plan(spec)
    except ManifestError as e:
        assert str(root / "m.parquet") in str(e) and ("row" in str(e) or "column" in str(e))
        assert policy == "fail" and len(kept) < len(rows)
        assert _files(root) == {"m.parquet"}
        return
    assert policy == "skip" or len(kept) == len(rows)
    owed = sum(1 if r["num_images"] is None else r["num_images"] for r in kept)
    assert p.records.num_rows == owed
    assert p.images_expected == owed + p.rejected_images
    batch = p.todo.append_column("pixels", pa.array([bytes(8 * 8 * 3)] * p.todo.num_rows, pa.binary()))
    batch = batch.append_column("status", pa.array([None] * batch.num_rows, pa.string()))
    batch = batch.append_column("error", pa.array([None] * batch.num_rows, pa.string()))
    if batch.num_rows:
        index = WriteStage(spec, str(root / "out"), "hostile")(batch)
        assert set(index.column("status").to_pylist()) == {RecordStatus.WRITTEN.value}
        assert sorted(index.column("id").to_pylist()) == sorted(p.records.column("id").to_pylist())
    for name in _files(root):
        assert name == "m.parquet" or name.startswith(("out/images/", "out/index/")), name
