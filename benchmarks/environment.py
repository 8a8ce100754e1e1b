"""The process environment a benchmark sets up before Ray or the model libraries start."""

from __future__ import annotations

import logging
import os
import sys

# No hub access, no Ray token file, quiet libraries. Ray workers and spawned processes inherit all of it.
SETTINGS = {
    "HF_HUB_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
}
# They read these once, when imported.
_READ_AT_IMPORT = ("huggingface_hub", "transformers", "diffusers", "ray")


def prepare_environment() -> None:
    """Sets `SETTINGS` (where not already set) and logging; every script's `main()` calls it first."""
    early = [name for name in _READ_AT_IMPORT if name in sys.modules]
    if early:
        raise RuntimeError(
            f"prepare_environment() ran after {', '.join(early)} was imported: import it inside functions "
            "that run after prepare_environment()"
        )
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
