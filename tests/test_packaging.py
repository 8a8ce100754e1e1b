"""The wheel: one `diffgen` namespace that installs beside a project with its own schemas/, jobs/ and
pipelines/, carrying every product module and nothing of the lab, the tests or the benchmarks."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, write_job, write_manifest

# The repository's folders that make up the installed package, and their names inside it.
PRODUCT = {"diffgen": "diffgen", "schemas": "diffgen/schemas", "pipelines": "diffgen/pipelines", "jobs": "diffgen/jobs"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools' build/ folder would otherwise keep modules since deleted.
    source = tmp_path_factory.mktemp("source")
    for name in (*PRODUCT, "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (REPO / name).is_dir() else {}))  # fmt: skip
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out),
         str(source)], check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("diffgen-*.whl")
    return built


def _expected_files() -> set[str]:
    found = set()
    for folder, inside in PRODUCT.items():
        for path in (REPO / folder).rglob("*"):
            relative = path.relative_to(REPO / folder)
            if path.suffix in (".py", ".yaml", ".json") and "__pycache__" not in relative.parts:
                if folder == "diffgen" and relative.parts[0] in ("schemas", "pipelines", "jobs"):
                    continue
                found.add(f"{inside}/{relative.as_posix()}")
    return found


@pytest.mark.slow
def test_the_wheel_holds_the_product_under_one_name_and_no_lab(wheel):
    names = {n for n in zipfile.ZipFile(wheel).namelist() if not n.startswith("diffgen-0.1.0.dist-info/")}
    assert {n.split("/")[0] for n in names} == {"diffgen"}
    assert names == _expected_files()
    assert "diffgen/generation/throughput.yaml" in names and "diffgen/schemas/json/job.schema.json" in names
    assert not any(part in n for n in names for part in ("lab/", "tests/", "benchmarks/", "micro", "tiny"))


@pytest.mark.slow
def test_installed_beside_a_project_with_its_own_schemas_jobs_and_pipelines(wheel, tmp_path, tiny_sd):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    # The third-party stack comes from this environment (a path entry, so its editable diffgen finder
    # is not loaded); diffgen itself only from the wheel.
    (site / "stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--quiet",
         str(wheel)], check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    project = tmp_path / "project"
    for package in ("schemas", "jobs", "pipelines"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f"OWNER = 'the project'  # its own {package}\n")
    (project / "schemas" / "job.py").write_text("JOB = 'the project'\n")
    code = (
        "import schemas, schemas.job, jobs, pipelines\n"
        "from diffgen.jobs.api import run, plan\n"
        "from diffgen.schemas.job import JobSpec\n"
        "import diffgen\n"
        "assert schemas.job.JOB == 'the project' and jobs.OWNER == pipelines.OWNER == 'the project'\n"
        "assert diffgen.__file__.startswith(%r), diffgen.__file__\n"
        "import sys; assert not any(m == 'lab' or m.startswith('lab.') for m in sys.modules)\n"
    ) % str(site)
    python = venv / "bin" / "python"
    result = subprocess.run([str(python), "-c", code], cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    manifest = write_manifest(project / "m.parquet", [{"id": "a", "prompt": "a cat"}])
    job = write_job(project / "job.yaml", tiny_sd, manifest=str(manifest), output=str(project / "out"))
    result = subprocess.run([str(venv / "bin" / "diffgen"), "validate", str(job)], cwd=project, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"images_to_generate": 1' in result.stdout
