"""The house's dependency direction, read from every product module's imports (ARCHITECTURE.md):
schemas <- engine <- pipelines <- jobs; only pipelines and jobs import ray; no product module imports
the lab, the tests, the benchmarks or the examples, nor the repository's folders by their bare names."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# room -> (the repository folder, the installed prefix)
ROOMS = {
    "schemas": "schemas",
    "engine": "diffgen",
    "pipelines": "pipelines",
    "jobs": "jobs",
}
# What each room may import of ours (installed names); anything not listed is refused.
ALLOWED = {
    "schemas": ("diffgen.schemas",),
    "engine": ("diffgen.schemas", "diffgen.generation", "diffgen.provenance", "diffgen.dataset", "diffgen.reporting",
               "diffgen.metrics", "diffgen.stages", "diffgen"),  # fmt: skip
    "pipelines": ("diffgen",),
    "jobs": ("diffgen",),
}
OURS = ("diffgen", "lab", "tests", "benchmarks", "examples", "schemas", "pipelines", "jobs")


def _modules(room: str) -> list[Path]:
    folder = REPO / ROOMS[room]
    files = sorted(folder.rglob("*.py"))
    if room == "engine":  # the engine is diffgen/ itself
        files = [f for f in files if f.relative_to(folder).parts[0] not in ("schemas", "pipelines", "jobs")]
    return files


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _refused(room: str, module: str) -> str | None:
    top = module.split(".")[0]
    if top == "ray":
        return None if room in ("pipelines", "jobs") else "ray outside pipelines/ and jobs/"
    if top not in OURS:
        return None
    if top != "diffgen":
        return f"'{module}' (the product imports only the diffgen namespace)"
    allowed = ALLOWED[room]
    if room == "engine" and module.startswith(("diffgen.pipelines", "diffgen.jobs")):
        return f"'{module}' (the engine sits below pipelines/ and jobs/)"
    if room == "pipelines" and module.startswith("diffgen.jobs"):
        return f"'{module}' (pipelines/ sits below jobs/)"
    if not any(module == a or module.startswith(a + ".") for a in allowed):
        return f"'{module}'"
    return None


@pytest.mark.parametrize("room", list(ROOMS))
def test_imports_point_one_way(room):
    problems = [
        f"{path.relative_to(REPO)}:{line}: {why}"
        for path in _modules(room)
        for line, module in _imports(path)
        if (why := _refused(room, module)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_the_product_never_loads_the_lab():
    """The import walk at run time: the CLI, the pipeline and the stages load no lab, test or benchmark module."""
    code = (
        "import sys\n"
        "import diffgen.jobs.cli, diffgen.jobs.generate, diffgen.pipelines.generate, diffgen.pipelines.qc\n"
        "import diffgen.provenance.verify, diffgen.generation.throughput\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lab', 'tests', 'benchmarks', 'examples',"
        " 'schemas', 'pipelines', 'jobs'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
