"""Versions of the packages that shape an output, recorded with every run."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

_PACKAGES = ("diffgen", "torch", "diffusers", "transformers", "ray", "pyarrow", "fsspec", "s3fs", "pydantic")


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
