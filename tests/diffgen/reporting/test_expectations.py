"""The GE runner on real tables: readable failures, quiet validation, results saved under the output."""

import json
import logging
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffgen.reporting import expectations
from diffgen.reporting.expectations import validate_index, validate_manifest_table, write_result
from diffgen.schemas.manifest import check_rows
from diffgen.schemas.record import INDEX_SCHEMA
from tests.conftest import REPO

GOOD = [
    {"id": "a", "prompt": "a cat", "num_images": 2, "width": 64, "label": "cat"},
    {"id": "b", "prompt": "a dog", "num_images": None, "width": None, "label": "dog"},
]


def _manifest(tmp_path, rows, schema=None) -> pa.Table:
    """Through Parquet, as a run reads it."""
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "m.parquet")
    return pq.read_table(tmp_path / "m.parquet")


def _index(n: int, **changes) -> list[dict]:
    rows = [
        {"record_id": f"r{i}", "id": f"m{i}", "status": "written", "image_uri": f"out/images/r{i}.png",
         "sha256": f"{i:064x}", "clip_score": 31.5}
        for i in range(n)
    ]  # fmt: skip
    for i, change in changes.items():
        rows[int(i[1:])].update(change)
    return rows


def _lines(result) -> str:
    return "\n".join(f.line for f in result.failures)


def test_a_good_manifest_passes(tmp_path):
    result = validate_manifest_table(_manifest(tmp_path, GOOD), max_images_per_row=4)
    assert result.success and result.failures == ()
    assert result.evaluated >= 10 and result.result["statistics"]["evaluated_expectations"] == result.evaluated


def test_duplicate_ids_name_the_expectation_values_and_rows(tmp_path):
    rows = [*GOOD, {"id": "a", "prompt": "a cow"}]
    result = validate_manifest_table(_manifest(tmp_path, rows))
    assert not result.success
    (failure,) = result.failures
    assert (failure.expectation, failure.column, failure.scope) == ("expect_column_values_to_be_unique", "id", "row")
    assert failure.line == (
        "expect_column_values_to_be_unique on 'id': 2 of 3 value(s) unexpected, e.g. 'a', 'a' at row(s) 0, 2"
    )


def test_a_missing_required_column_is_a_table_failure(tmp_path):
    result = validate_manifest_table(_manifest(tmp_path, [{"id": "a", "num_images": 1}]))
    assert [f.line for f in result.table_failures] == ["expect_column_to_exist on 'prompt': column is missing"]
    assert "could not be evaluated" not in _lines(result)


def test_value_ranges_and_the_image_cap(tmp_path):
    rows = [*GOOD, {"id": "c", "prompt": " ", "num_images": 9, "width": 4}]
    result = validate_manifest_table(_manifest(tmp_path, rows), max_images_per_row=4)
    lines = _lines(result)
    assert "expect_column_values_to_be_between on 'num_images' (min_value=1.0, max_value=4.0): 1 of 3" in lines
    assert "e.g. 9.0 at row(s) 2" in lines
    assert "expect_column_values_to_be_between on 'width' (min_value=8.0, max_value=8192.0)" in lines
    assert "expect_column_values_to_match_regex on 'prompt' (regex='\\\\S'): 1 of 3 value(s) unexpected" in lines
    assert {f.scope for f in result.failures} == {"row"}


def test_the_suite_flags_the_rows_check_rows_finds(tmp_path):
    """Under policy "skip" the suite's row failures must be exactly the rows check_rows rejects."""
    rows = [
        {"id": "ok", "prompt": "p", "num_images": 1, "steps": 10, "guidance_scale": 7.5},
        {"id": None, "prompt": "p", "num_images": 1, "steps": 10, "guidance_scale": 7.5},
        {"id": "e", "prompt": "", "num_images": 1, "steps": 10, "guidance_scale": 7.5},
        {"id": "n", "prompt": "p", "num_images": 0, "steps": 10, "guidance_scale": 7.5},
        {"id": "s", "prompt": "p", "num_images": 1, "steps": 1001, "guidance_scale": 7.5},
        {"id": "g", "prompt": "p", "num_images": 1, "steps": 10, "guidance_scale": -1.0},
        {"id": "x" * 513, "prompt": "p", "num_images": 1, "steps": 10, "guidance_scale": 7.5},
        {"id": "ok2", "prompt": "p", "num_images": 1, "steps": 10, "guidance_scale": 7.5},
    ]
    table = _manifest(tmp_path, rows)
    result = validate_manifest_table(table, max_images_per_row=4)
    failed = [r["result"] for r in result.result["results"] if not r["success"]]
    flagged = {i for r in failed for i in r["partial_unexpected_index_list"]}
    assert flagged == set(check_rows(table, "m", max_images_per_row=4)) == {1, 2, 3, 4, 5, 6}


def test_a_mistyped_column_is_left_to_check_rows(tmp_path):
    rows = [{"id": "a", "prompt": "p", "width": "wide"}]
    result = validate_manifest_table(_manifest(tmp_path, rows))
    assert result.success, _lines(result)


def test_an_empty_manifest_fails_at_table_level(tmp_path):
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string())])
    result = validate_manifest_table(_manifest(tmp_path, [], schema))
    assert [f.line for f in result.table_failures] == ["expect_table_row_count_to_be_between (min_value=1): observed 0"]


def test_a_complete_index_passes():
    ids = [f"r{i}" for i in range(3)]
    rows = _index(3, r1={"status": "failed", "image_uri": None, "sha256": None, "clip_score": None, "error": "x"})
    result = validate_index(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), ids)
    assert result.success, _lines(result)


@pytest.mark.parametrize(
    ("rows", "expected_ids", "line"),
    [
        (_index(3), ["r0", "r1", "r2", "r3"], "expect_table_row_count_to_equal (value=4): observed 3"),
        (_index(2, r1={"record_id": "r0"}), ["r0", "r1"],
         "expect_column_values_to_be_unique on 'record_id': 2 of 2 value(s) unexpected, e.g. 'r0', 'r0'"),
        (_index(2, r1={"record_id": "zz"}), ["r0", "r1"],
         "on 'expected_record' (value_set=[True]): 1 of 2 value(s) unexpected, e.g. False at record_id 'zz'"),
        (_index(2, r1={"status": "lost"}), ["r0", "r1"], "e.g. 'lost' at record_id 'r1'"),
        (_index(2, r1={"sha256": None}), ["r0", "r1"],
         "expect_column_values_to_not_be_null on 'sha256' (where status == 'written'): 1 of 2 value(s) unexpected"),
        (_index(2, r0={"sha256": "ab" * 32 + "\n"}), ["r0", "r1"], "expect_column_values_to_match_regex on 'sha256'"),
        (_index(2, r0={"sha256": "AB" * 32}), ["r0", "r1"], "expect_column_values_to_match_regex on 'sha256'"),
        (_index(2, r1={"clip_score": 100.5}), ["r0", "r1"], "'clip_score' (min_value=0.0, max_value=100.0): 1 of 2"),
        (_index(2, r1={"image_uri": None}), ["r0", "r1"], "expect_column_values_to_not_be_null on 'image_uri'"),
    ],
    ids=["missing-record", "duplicate", "foreign", "status", "no-sha", "sha-newline", "sha-case", "clip", "no-uri"],
)  # fmt: skip
def test_index_failures_are_named(rows, expected_ids, line):
    result = validate_index(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), expected_ids)
    assert not result.success
    assert line in _lines(result)


def test_a_large_index_stays_quick_and_its_saved_result_small(tmp_path):
    n = 20_000
    rows = _index(n)
    rows[7]["record_id"] = "foreign"
    expected = [f"r{i}" for i in range(n)]
    start = time.process_time()
    result = validate_index(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), expected)
    assert time.process_time() - start < 5  # ~0.3 s; an in-set check over every record id took ~6 s here
    assert [f.line.split(": ", 1)[1] for f in result.failures] == [
        "1 of 20000 value(s) unexpected, e.g. False at record_id 'foreign'"
    ]
    write_result(str(tmp_path / "out"), result)
    assert (tmp_path / "out" / "qc" / "expectations" / "index.json").stat().st_size < 20_000


def test_the_saved_result_is_plain_json_and_a_rerun_overwrites_it(tmp_path):
    out = str(tmp_path / "out")
    bad = validate_manifest_table(_manifest(tmp_path, [*GOOD, {"id": "a", "prompt": "p"}]))
    json.dumps(bad.to_json(), allow_nan=False)  # no numpy scalars, no NaN
    write_result(out, bad)
    write_result(out, validate_manifest_table(_manifest(tmp_path, GOOD)))
    assert [p.name for p in (tmp_path / "out" / "qc" / "expectations").iterdir()] == ["manifest.json"]
    saved = json.loads((tmp_path / "out" / "qc" / "expectations" / "manifest.json").read_text())
    assert saved["success"] is True and saved["failed"] == [] and saved["great_expectations"]["success"] is True


def test_validation_prints_no_progress_bars_and_logs_nothing(tmp_path, capfd, caplog):
    table = _manifest(tmp_path, [*GOOD, {"id": "a", "prompt": "p"}])
    validate_manifest_table(table)  # the first call in a process also imports GE and builds the context
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG):
        validate_manifest_table(table)
    out, err = capfd.readouterr()
    assert "Calculating Metrics" not in out + err and out + err == ""
    assert [r for r in caplog.records if r.name.startswith("great_expectations")] == []
    assert logging.getLogger("great_expectations").level == logging.NOTSET  # left as it was found


def test_one_context_per_process(tmp_path):
    table = _manifest(tmp_path, GOOD)
    validate_manifest_table(table)
    before = expectations._batch_definition.cache_info()
    validate_manifest_table(table)
    validate_index(pa.Table.from_pylist(_index(1), schema=INDEX_SCHEMA), ["r0"])
    after = expectations._batch_definition.cache_info()
    assert after.currsize == 1 and after.misses == before.misses


def test_importing_the_runner_does_not_import_great_expectations():
    """Every Ray worker imports the pipeline modules that import this one; GE's import costs seconds."""
    code = "import sys, diffgen.reporting.expectations; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, timeout=120).returncode == 0
