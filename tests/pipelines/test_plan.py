"""Pre-flight: everything decided before a model loads."""

import pytest

from diffgen import storage
from pipelines.plan import OutputError, plan
from schemas.job import JobSpecError, load_job_spec
from schemas.manifest import ManifestError
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


def test_unwritable_output_fails_before_any_model_loads(tmp_path, tiny_sd, s3_server):
    with pytest.raises(OutputError, match="s3://no-such-bucket-diffgen/out is not writable"):
        plan(_spec(tmp_path, tiny_sd, "s3://no-such-bucket-diffgen/out", policy={"invalid_rows": "skip"}))


def test_probe_leaves_nothing_behind(tmp_path, tiny_sd, s3_bucket):
    plan(_spec(tmp_path, tiny_sd, f"{s3_bucket}/out", policy={"invalid_rows": "skip"}))
    assert storage.list_files(f"{s3_bucket}/out") == []
