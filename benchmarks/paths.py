"""Where the benchmarks read their job and write their results."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JOB = REPO / "examples" / "default" / "job.yaml"
RESULTS = REPO / "benchmarks" / "results"
QUICK_RESULTS = REPO / "out" / "benchmarks"
# Real-size model folders are built here once (git-ignored).
MODELS_DIR = REPO / "examples" / "models"
