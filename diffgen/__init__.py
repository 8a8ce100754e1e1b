"""diffgen: distributed generation of labelled synthetic image datasets with diffusion models.

One import namespace: the engine's rooms (`diffgen.generation`, `diffgen.provenance`, `diffgen.dataset`,
`diffgen.reporting`, `diffgen.metrics`, `diffgen.stages`) live in this folder; `diffgen.schemas`,
`diffgen.pipelines` and `diffgen.jobs` are the repository's `schemas/`, `pipelines/` and `jobs/`, mapped
under this name by the package build (pyproject.toml's package-dir). The engine imports `diffgen.schemas`,
never `ray`: it runs and tests without a cluster.
"""

__version__ = "0.1.0"
