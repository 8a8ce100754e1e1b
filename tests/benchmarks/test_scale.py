"""The scale benchmark: its stand-in keeps the generation stage's column contract, the manifests it makes are
what it says, and a quick run in its own process writes a results document whose numbers reconcile."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.scale import StandInGenerator, loglog_svg, write_manifest
from diffgen.stages.generate import GenerateStage
from tests.conftest import REPO


def test_the_stand_in_adds_what_the_generation_stage_adds_with_a_flat_image_per_seed():
    batch = pa.table({"record_id": ["a", "b"], "seed": [3, 254], "width": [8, 8], "height": [4, 4]})
    out = StandInGenerator(None, None)(batch)
    assert out.column_names == [*batch.column_names, *StandInGenerator.adds]
    assert set(StandInGenerator.adds) == set(GenerateStage.adds)
    pixels = out.column("pixels").to_pylist()
    assert [len(p) for p in pixels] == [8 * 4 * 3] * 2
    assert set(pixels[0]) == {3} and set(pixels[1]) == {254 % 251}
    assert out.column("status").null_count == 2


def test_a_synthetic_manifest_has_unique_ids_in_row_groups(tmp_path):
    path = write_manifest(tmp_path / "m.parquet", 1000, row_group_rows=300)
    meta = pq.ParquetFile(path).metadata
    assert (meta.num_rows, meta.num_row_groups) == (1000, 4)
    table = pq.read_table(path)
    assert table.column_names == ["id", "prompt", "label"]
    assert len(set(table.column("id").to_pylist())) == 1000


def test_the_chart_is_log_log_with_a_line_per_series():
    svg = loglog_svg({"a": [(1e5, 2.0), (1e6, 20.0)], "b": [(1e5, 900.0), (1e6, 950.0)]},
                     x_label="rows", y_label="v", title="t")  # fmt: skip
    assert svg.count("<polyline") == 2 and "rows (log)" in svg
    assert loglog_svg({}, x_label="x", y_label="y", title="t") == ""


@pytest.mark.slow
def test_a_quick_run_measures_the_driver_the_plan_and_a_resume(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--quick", "--images", "128", "--batches", "8",
         "--sizes", "3000", "--resume-sizes", "2000"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = Path(result.stdout.strip().splitlines()[-1].removeprefix("results: "))
    doc = json.loads(out.read_text())
    (driver,) = doc["driver"]
    assert [r["images"] for r in driver["runs"]] == [32, 128]
    assert [r["written"] for r in driver["runs"]] == [32, 128]
    assert driver["driver_cpu_ms_per_image"] > 0
    (plan,) = doc["plan"]
    assert (plan["rows"], plan["records"]) == (3000, 3000)
    assert plan["peak_rss_mb"] >= plan["rss_after_imports_mb"] > 0
    (resume,) = doc["resume"]  # a finished output's index: the same job finds nothing to make
    assert (resume["index_rows"], resume["records"], resume["to_make"]) == (2000, 2000, 0)
