"""`diffgen qc`: which QC settings a rescoring uses, and what it refuses."""

import json

import pytest

from diffgen.dataset import storage
from diffgen.jobs.qc import qc_spec, rescore
from diffgen.schemas.job import JobSpecError
from tests.conftest import write_job


def _output(tmp_path, qc: dict) -> str:
    out = str(tmp_path / "out")
    storage.write_bytes(storage.join(out, "run.json"), json.dumps({"job": {"qc": qc}}).encode())
    return out


def test_settings_come_from_the_outputs_run_json_then_overrides(tmp_path):
    out = _output(tmp_path, {"enabled": False, "flat_std": 3.0, "phash_max_distance": 2})
    spec = qc_spec(out, overrides=["qc.flat_std=9", "qc.fid_group_by=label"])
    assert spec.enabled and (spec.flat_std, spec.phash_max_distance, spec.fid_group_by) == (9.0, 2, "label")


def test_a_job_file_replaces_the_run_json_settings(tmp_path, tiny_sd):
    out = _output(tmp_path, {"flat_std": 3.0})
    job = write_job(tmp_path / "job.yaml", tiny_sd, qc={"black_level": 20.0})
    spec = qc_spec(out, job=str(job))
    assert (spec.black_level, spec.flat_std) == (20.0, 2.0)


def test_without_run_json_the_defaults_apply(tmp_path):
    spec = qc_spec(str(tmp_path / "elsewhere"))
    assert spec.enabled and spec.flat_std == 2.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sampler.steps=3"], "takes only qc.* settings"),
        (["qc.flat_std=-1"], "flat_std"),
        (["qc.min_clip_score=20"], "min_clip_score needs clip_model"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(JobSpecError, match=message):
        qc_spec(_output(tmp_path, {}), overrides=overrides)


def test_an_output_without_an_index_is_refused_before_ray_starts(tmp_path):
    with pytest.raises(JobSpecError, match="has no index/ folder"):
        rescore(_output(tmp_path, {}))
