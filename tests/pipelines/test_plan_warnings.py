"""The plan's warnings: a distilled model off its recipe, prompt placeholders that no embedding loads."""

from diffgen.pipelines.plan import plan
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest


def test_validate_lists_what_a_distilled_model_was_not_made_for_and_unknown_placeholders(
    tmp_path, tiny_lcm, tiny_embedding, caplog
):
    rows = [{"id": "a", "prompt": "a <tiny-concept>", "steps": 25}, {"id": "b", "prompt": "a <cat-toy>"}]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    job = write_job(tmp_path / "job.yaml", tiny_lcm, sampler={"scheduler": "default"},
                    textual_inversions=[{"path": str(tiny_embedding), "token": "<tiny-concept>"}])  # fmt: skip
    p = plan(load_job_spec(job, manifest=str(manifest), output=str(tmp_path / "out")))
    assert p.describe()["warnings"] == [
        "model.id tiny-lcm: its scheduler is LCMScheduler (LCM-distilled), made for at most 8 steps; 1 image(s) at 25",
        "prompt: <cat-toy> in 1 prompt(s) is not a textual_inversions token (loaded: <tiny-concept>); the text "
        "encoder reads it as plain characters",
    ]
    assert all(w in caplog.text for w in p.warnings)
