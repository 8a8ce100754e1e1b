"""`python -m diffgen.jobs.export_schemas`: write the JSON Schemas of run.json, the job spec, qc/utility.json and
sweep.json to schemas/json/,
so tools in any language can read diffgen's results. A test keeps the committed files current."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffgen.schemas.job import JobSpec
from diffgen.schemas.run import RunSummary
from diffgen.schemas.sweep import SweepReport
from diffgen.schemas.utility import UtilityReport

FOLDER = Path(__file__).resolve().parents[1] / "schemas" / "json"
SCHEMAS = {
    "run.schema.json": RunSummary,
    "job.schema.json": JobSpec,
    "utility.schema.json": UtilityReport,
    "sweep.schema.json": SweepReport,
}


def render(model: type) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    FOLDER.mkdir(exist_ok=True)
    for name, model in SCHEMAS.items():
        (FOLDER / name).write_text(render(model))
        print(FOLDER / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
