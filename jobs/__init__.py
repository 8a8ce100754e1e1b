"""Entry points: the `diffgen` CLI and `python -m diffgen.jobs.<name>` for `ray job submit` and orchestrators."""
