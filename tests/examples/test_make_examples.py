"""The default, ControlNet, img2img and utility examples: their committed inputs are what the script makes, and their
job specs and manifests pass every check that runs before a model loads."""

import importlib.util
from pathlib import Path

import pytest

from diffgen.dataset import storage
from diffgen.dataset.records import expand
from diffgen.schemas.job import load_job_spec
from diffgen.schemas.manifest import validate_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _script():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_inputs_are_what_the_script_makes(tmp_path):
    _script().main(["--root", str(tmp_path)])
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made, "the script wrote nothing"
    for relative in made:
        assert (EXAMPLES / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative


@pytest.mark.parametrize("name, images", [("default", 24), ("controlnet", 8), ("img2img", 5), ("utility", 128)])
def test_the_example_jobs_and_manifests_validate(name, images):
    spec = load_job_spec(EXAMPLES / name / "job.yaml")
    manifest = storage.read_parquet(spec.manifest)
    validate_manifest(manifest, spec.manifest)
    records = expand(manifest, spec)
    assert records.num_rows == images
    for column in ("control_image", "init_image", "mask_image"):
        if column in records.column_names:
            for uri in records.column(column).to_pylist():
                assert uri is None or Path(uri).is_file(), uri


def test_the_utility_examples_real_set_passes_the_pre_flight_with_every_shape():
    from diffgen.reporting.utility import check_before_run

    spec = load_job_spec(EXAMPLES / "utility" / "job.yaml")
    check_before_run(spec.qc, storage.read_parquet(spec.manifest))  # raises naming the problem
    real = {p.parent.name for p in (EXAMPLES / "utility" / "real").rglob("*.png")}
    assert real == set(storage.read_parquet(spec.manifest).column("label").to_pylist()) and len(real) == 4
