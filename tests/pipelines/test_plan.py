"""Pre-flight: everything decided before a model loads."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from diffgen.dataset import storage
from diffgen.pipelines.plan import OutputError, plan, write_index_validation, write_validation
from diffgen.provenance.png import encode_png
from diffgen.schemas.job import JobSpecError, load_job_spec
from diffgen.schemas.manifest import ManifestError
from diffgen.schemas.record import INDEX_SCHEMA
from tests.conftest import write_job, write_manifest

ROWS = [
    {"id": "ok-1", "prompt": "a cat", "num_images": 2},
    {"id": "bad-empty", "prompt": " ", "num_images": 3},
    {"id": "ok-2", "prompt": "a dog", "num_images": 1},
    {"id": "bad-many", "prompt": "a cow", "num_images": 50},
]


def _spec(tmp_path, tiny_sd, output, **sections):
    manifest = write_manifest(tmp_path / "m.parquet", ROWS)
    return load_job_spec(write_job(tmp_path / "job.yaml", tiny_sd, **sections), manifest=str(manifest), output=output)


def test_fail_policy_lists_rows_including_the_image_cap(tmp_path, tiny_sd):
    spec = _spec(tmp_path, tiny_sd, str(tmp_path / "out"), policy={"max_images_per_row": 10})
    with pytest.raises(ManifestError) as err:
        plan(spec)
    assert "2 of 4 row(s) invalid" in str(err.value)
    assert "row 3 (id='bad-many'): num_images: 50 is above policy.max_images_per_row=10" in str(err.value)


def test_skip_policy_counts_what_invalid_rows_owed(tmp_path, tiny_sd):
    spec = _spec(tmp_path, tiny_sd, str(tmp_path / "out"), policy={"invalid_rows": "skip", "max_images_per_row": 10})
    p = plan(spec)
    assert p.rejects.column("row_index").to_pylist() == [1, 3]
    assert p.rejected_images == 3 + 1  # a valid num_images is owed; one above the cap counts once
    assert p.records.num_rows == 3 and p.images_expected == 7
    assert p.describe()["batches"] == 2


def test_output_may_not_overlap_the_manifest(tmp_path, tiny_sd):
    with pytest.raises(JobSpecError, match="overlaps the manifest"):
        plan(_spec(tmp_path, tiny_sd, str(tmp_path)))


@pytest.mark.parametrize("key", ["reference", "reference_stats"])
def test_output_may_not_overlap_the_qc_reference(tmp_path, tiny_sd, key):
    inside = str(tmp_path / "out" / "ref")
    with pytest.raises(JobSpecError, match=f"overlaps qc.{key} {inside}"):
        plan(_spec(tmp_path, tiny_sd, str(tmp_path / "out"), qc={"enabled": True, key: inside}))


def test_unwritable_output_fails_before_any_model_loads(tmp_path, tiny_sd, s3_server):
    with pytest.raises(OutputError, match="s3://no-such-bucket-diffgen/out is not writable"):
        plan(_spec(tmp_path, tiny_sd, "s3://no-such-bucket-diffgen/out", policy={"invalid_rows": "skip"}))


def test_probe_leaves_nothing_behind(tmp_path, tiny_sd, s3_bucket):
    plan(_spec(tmp_path, tiny_sd, f"{s3_bucket}/out", policy={"invalid_rows": "skip"}))
    assert storage.list_files(f"{s3_bucket}/out") == []


def _manifest_spec(tmp_path, tiny_sd, rows, policy="fail"):
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    job = write_job(tmp_path / "job.yaml", tiny_sd, policy={"invalid_rows": policy})
    return load_job_spec(job, manifest=str(manifest), output=str(tmp_path / "out"))


DUPLICATE_IDS = [{"id": "a", "prompt": "a cat"}, {"id": "b", "prompt": "a dog"}, {"id": "a", "prompt": "a cow"}]


def test_duplicate_ids_under_fail_stop_with_the_failed_expectation_named(tmp_path, tiny_sd):
    with pytest.raises(ManifestError) as err:
        plan(_manifest_spec(tmp_path, tiny_sd, DUPLICATE_IDS, "fail"))
    message = str(err.value)
    assert f"{tmp_path / 'm.parquet'}: manifest failed 1 of " in message
    assert (
        "  - expect_column_values_to_be_unique on 'id': 2 of 3 value(s) unexpected, e.g. 'a', 'a' at row(s) 0, 2"
        in message
    )
    assert "row 2 (id='a'): id: duplicate of row 0" in message  # check_rows' own listing follows


def test_duplicate_ids_under_skip_are_rejected_rows_and_recorded(tmp_path, tiny_sd):
    p = plan(_manifest_spec(tmp_path, tiny_sd, DUPLICATE_IDS, "skip"))
    assert p.rejects.column("row_index").to_pylist() == [2]
    assert not p.manifest_validation.success
    described = p.describe()["manifest_expectations"]
    assert described["success"] is False and len(described["failed"]) == 1
    assert described["failed"][0].startswith("expect_column_values_to_be_unique on 'id'")


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_missing_prompt_column_stops_under_either_policy(tmp_path, tiny_sd, policy):
    with pytest.raises(ManifestError) as err:
        plan(_manifest_spec(tmp_path, tiny_sd, [{"id": "a"}, {"id": "b"}], policy))
    message = str(err.value)
    assert "missing required column 'prompt'" in message
    assert "manifest failed 1 of " in message and "  - expect_column_to_exist on 'prompt': column is missing" in message


def test_a_good_manifest_result_is_printed_and_saved(tmp_path, tiny_sd):
    p = plan(_manifest_spec(tmp_path, tiny_sd, [{"id": "a", "prompt": "a cat", "num_images": 2}]))
    described = p.describe()["manifest_expectations"]
    assert described["suite"] == "manifest" and described["success"] is True and described["failed"] == []
    assert not (tmp_path / "out").exists()  # plan writes nothing; the run saves it
    write_validation(p)
    write_validation(p)  # a re-run overwrites the same file
    saved = tmp_path / "out" / "qc" / "expectations"
    assert [f.name for f in saved.iterdir()] == ["manifest.json"]
    result = json.loads((saved / "manifest.json").read_text())
    assert result["success"] is True and result["great_expectations"]["suite_name"] == "manifest"
    assert result["expectations"] == described["expectations"] >= 10


def _index_for(p, **overrides) -> pa.Table:
    rows = [
        {"record_id": rid, "id": "a", "status": "written", "image_uri": f"{p.output}/images/{rid}.png",
         "sha256": hashlib.sha256(rid.encode()).hexdigest()} | overrides
        for rid in p.records.column("record_id").to_pylist()
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


def test_index_validation_is_saved_beside_the_manifest_result(tmp_path, tiny_sd):
    p = plan(_manifest_spec(tmp_path, tiny_sd, [{"id": "a", "prompt": "a cat", "num_images": 3}]))
    saved = tmp_path / "out" / "qc" / "expectations" / "index.json"
    assert write_index_validation(p, _index_for(p)).success
    assert json.loads(saved.read_text())["success"] is True
    short = _index_for(p).slice(0, 2)
    result = write_index_validation(p, short)
    assert "expect_table_row_count_to_equal (value=3): observed 2" in [f.line for f in result.failures]
    assert json.loads(saved.read_text())["success"] is False
    assert not write_index_validation(p, None).success  # no index at all: nothing of the 3 records


def test_a_missing_qc_reference_or_model_fails_the_plan(tmp_path, tiny_sd):
    qc = {"enabled": True, "reference": str(tmp_path / "no-ref"), "clip_model": str(tmp_path / "no-clip")}
    with pytest.raises(JobSpecError, match=r"qc.clip_model: .*no-clip does not exist; qc.reference: .*no-ref"):
        plan(
            _spec(
                tmp_path,
                tiny_sd,
                str(tmp_path / "out"),
                qc=qc,
                policy={"invalid_rows": "skip", "max_images_per_row": 100},
            )
        )


def test_an_empty_qc_reference_fails_the_plan_before_any_actor(tmp_path, tiny_sd):
    empty = tmp_path / "ref"
    empty.mkdir()
    (empty / "README.txt").write_text("images go here")
    qc = {"enabled": True, "reference": str(empty)}
    policy = {"invalid_rows": "skip", "max_images_per_row": 100}
    with pytest.raises(JobSpecError, match=r"qc.reference: reference .*ref holds no images"):
        plan(_spec(tmp_path, tiny_sd, str(tmp_path / "out"), qc=qc, policy=policy))
    (empty / "a.png").write_bytes(encode_png(np.zeros((32, 32, 3), np.uint8)))
    assert plan(_spec(tmp_path, tiny_sd, str(tmp_path / "out"), qc=qc, policy=policy)).todo.num_rows > 0


def test_the_preflight_finds_every_missing_input_image(tmp_path, tiny_sd):
    present = tmp_path / "init.png"
    present.write_bytes(encode_png(np.zeros((32, 32, 3), np.uint8)))
    rows = [{"id": "ok", "prompt": "p", "init_image": str(present)},
            {"id": "gone", "prompt": "p", "init_image": "missing/a.png"},
            {"id": "gone-too", "prompt": "p", "init_image": "missing/a.png"}]  # fmt: skip
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    spec = load_job_spec(write_job(tmp_path / "job.yaml", tiny_sd), manifest=str(manifest), output=str(tmp_path / "o"))
    # A run rejects the row itself; the pre-flight names the file and the first row that needs it.
    assert plan(spec).records.num_rows == 3
    expected = r"1 of 2 input image\(s\) cannot be used: .*missing/a.png \(row id='gone'\): not found"
    with pytest.raises(ManifestError, match=expected):
        plan(spec, check_images=True)


def test_a_missing_fid_group_by_column_fails_the_plan_naming_the_field(tmp_path, tiny_sd):
    spec = _spec(tmp_path, tiny_sd, str(tmp_path / "out"), qc={"enabled": True, "fid_group_by": "label"},
                 policy={"invalid_rows": "skip", "max_images_per_row": 10})  # fmt: skip
    with pytest.raises(JobSpecError, match=r"qc.fid_group_by: the manifest has no column 'label' \(it has id, "):
        plan(spec)


def _real_set(root, counts: dict[str, int]) -> str:
    rng = np.random.default_rng(0)
    for label, n in counts.items():
        for i in range(n):
            storage.write_bytes(str(root / label / f"{i}.png"), encode_png(rng.integers(0, 256, (16, 16, 3), np.uint8)))
    return str(root)


def _utility_spec(tmp_path, tiny_sd, tiny_clip, real: str, rows: list[dict]):
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    qc = {"enabled": True, "clip_model": str(tiny_clip), "utility": {"real": real}}
    return load_job_spec(write_job(tmp_path / "job.yaml", tiny_sd, qc=qc), manifest=str(manifest),
                         output=str(tmp_path / "out"))  # fmt: skip


def test_the_utility_real_set_is_checked_against_the_manifest_before_any_model_loads(tmp_path, tiny_sd, tiny_clip):
    labelled = [{"id": f"r{i}", "prompt": "a shape", "label": "ab"[i % 2]} for i in range(4)]
    real = _real_set(tmp_path / "real", {"a": 2, "b": 2})
    assert plan(_utility_spec(tmp_path, tiny_sd, tiny_clip, real, labelled)).todo.num_rows == 4
    unlabelled = [{"id": "r0", "prompt": "a shape"}]
    with pytest.raises(JobSpecError, match="qc.utility.label_column: the manifest has no column 'label'"):
        plan(_utility_spec(tmp_path, tiny_sd, tiny_clip, real, unlabelled))
    apart = _real_set(tmp_path / "apart", {"x": 2, "y": 2})
    with pytest.raises(JobSpecError, match=r"labels do not overlap: column 'label' has \['a', 'b'\]"):
        plan(_utility_spec(tmp_path, tiny_sd, tiny_clip, apart, labelled))
    storage.write_bytes(str(tmp_path / "real" / "b" / "broken.png"), b"not a png")
    with pytest.raises(JobSpecError, match="b/broken.png cannot be read"):
        plan(_utility_spec(tmp_path, tiny_sd, tiny_clip, real, labelled))


@pytest.mark.slow
def test_bad_rows_far_apart_in_a_large_manifest_are_named_as_in_a_small_one(tmp_path, tiny_sd):
    import pyarrow.parquet as pq

    n = 200_000
    ids = [f"row-{i:06d}" for i in range(n)]
    ids[n - 1] = ids[0]  # a duplicate 199,999 rows after its first
    steps = pa.array([None] * (n - 2) + [0, None], pa.int32())  # one bad row at the end
    table = pa.table({"id": ids, "prompt": ["a red circle"] * n, "steps": steps})
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=5_000)  # 40 row groups
    job = write_job(tmp_path / "job.yaml", tiny_sd, policy={"invalid_rows": "fail", "max_images": n})
    with pytest.raises(ManifestError) as err:
        plan(load_job_spec(job, manifest=str(path), output=str(tmp_path / "out")))
    message = str(err.value)
    assert "expect_column_values_to_be_unique on 'id': 2 of 200000 value(s) unexpected, e.g. 'row-000000', " \
        "'row-000000' at row(s) 0, 199999" in message
    assert "2 of 200000 row(s) invalid" in message
    assert "row 199998 (id='row-199998'): steps: Input should be greater than or equal to 1" in message
    assert "row 199999 (id='row-000000'): id: duplicate of row 0 ('row-000000')" in message
