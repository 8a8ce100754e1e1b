"""Entry points: the `diffgen` CLI and `python -m jobs.<name>` for `ray job submit` and orchestrators."""
