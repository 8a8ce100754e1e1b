import json

import jsonschema

from diffgen.jobs.export_schemas import FOLDER, SCHEMAS, render


def test_published_schemas_are_current():
    for name, model in SCHEMAS.items():
        assert (FOLDER / name).read_text() == render(model), f"run `python -m diffgen.jobs.export_schemas` ({name} is stale)"


def test_a_real_run_json_validates_against_the_published_schema():
    schema = json.loads((FOLDER / "run.schema.json").read_text())
    run = {
        "run_id": "r", "status": "partial", "manifest": "m", "output": "o", "job": {},
        "counts": {"manifest_rows": 2, "invalid_rows": 0, "images_expected": 3, "images_written": 2,
                   "rejected": 1, "failed": 0},
        "started_at": "2026-11-22T00:00:00Z", "finished_at": "2026-11-22T00:01:00Z",
        "wall_time_s": 60.0, "images_per_second": 0.03, "versions": {"diffgen": "0.1.0"},
    }  # fmt: skip
    jsonschema.validate(run, schema)
    run["status"] = "done"
    try:
        jsonschema.validate(run, schema)
    except jsonschema.ValidationError as e:
        assert "done" in str(e.message)
    else:
        raise AssertionError("an unknown status validated")
