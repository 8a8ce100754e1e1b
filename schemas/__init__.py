"""Data contracts of diffgen: job spec, manifest, output record, run summary.

This package imports nothing of ours; every other package imports it.
"""

from schemas.job import JobSpec, load_job_spec
from schemas.manifest import ManifestError, validate_manifest
from schemas.record import INDEX_COLUMNS, RecordStatus
from schemas.run import RunCounts, RunSummary

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
