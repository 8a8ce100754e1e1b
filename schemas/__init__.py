"""Data contracts of diffgen: job spec, manifest, output record, run summary.

This package imports nothing of ours; every other package imports it.
"""

from diffgen.schemas.job import JobSpec, load_job_spec
from diffgen.schemas.manifest import ManifestError, validate_manifest
from diffgen.schemas.record import INDEX_COLUMNS, RecordStatus
from diffgen.schemas.run import RunCounts, RunSummary

__all__ = [
    "INDEX_COLUMNS",
    "JobSpec",
    "ManifestError",
    "RecordStatus",
    "RunCounts",
    "RunSummary",
    "load_job_spec",
    "validate_manifest",
]
