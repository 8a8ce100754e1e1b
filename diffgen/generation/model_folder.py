"""Finding a model's folder and reading its JSON files, without importing torch or diffusers.

The write stage needs the folder (to hash the weights for provenance) and runs in workers that
never load a model; importing diffusers costs those workers seconds of CPU each (tens of seconds
on a busy 2-core node), so this lives apart from `diffgen.generation.loading`.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffgen.schemas.job import ModelSpec


class ModelLoadError(RuntimeError):
    """The model folder is missing, unreadable or of a kind diffgen cannot run."""


def model_folder(model: ModelSpec, field: str) -> Path:
    """The folder of `model.id`: a local path, or a hub id already in the local cache (never downloaded)."""
    folder = Path(model.id)
    if folder.is_dir():
        return folder
    if model.id.startswith((".", "/", "~")) or model.id.count("/") != 1:
        raise ModelLoadError(f"{field}: folder {model.id} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model.id, revision=model.revision, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - the hub client raises several unrelated types for "not cached"
        raise ModelLoadError(
            f"{field}: '{model.id}' is neither a local folder nor in the local hub cache "
            f"(downloads are off; fetch it ahead of time): {type(e).__name__}"
        ) from None


def _is_hub_id(name: object) -> bool:
    return isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~")) and " " not in name


def model_name(model: ModelSpec) -> str:
    """What provenance calls the model: its hub id, or for a local folder the hub id its model_index.json states
    (`_name_or_path`), else the folder's own name; never a machine's path (the weights hash pins the weights)."""
    folder = Path(model.id)
    if not folder.is_dir():
        return model.id
    try:
        stated = json.loads((folder / "model_index.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        stated = None
    return stated if _is_hub_id(stated) else folder.resolve().name


def read_json(path: Path, field: str, what: str) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"{field}: {path.parent} has no {path.name}; is it a diffusers {what} folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{field}: {path} is not valid JSON: {e}") from None


def model_index(model: ModelSpec) -> tuple[Path, dict]:
    """The model's folder and its parsed model_index.json, from disk or the local hub cache only."""
    folder = model_folder(model, "model.id")
    return folder, read_json(folder / "model_index.json", "model.id", "pipeline")
