"""Weights files checked without loading them: which files a component loads, and whether each is whole.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming each
tensor's dtype, shape and byte span, then the tensors packed end to end. Its header alone
tells whether the file is truncated, padded or not safetensors at all, so the check reads
the first N + 8 bytes and never a tensor, however large the file. A pickle checkpoint is
only recognised by its first bytes (and a zip's directory at its end): unpickling it is
what could run code. Nothing here imports torch, diffusers or transformers.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path


class WeightsFileError(ValueError):
    """A weights file that is missing, truncated or not what its name says; names the file."""


# The safetensors library's own limit on the header (safetensors' MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000

# Bits per element of each dtype the safetensors library reads.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}  # fmt: skip

# The files each library's `from_pretrained` looks for in a component folder, in its order, first
# found wins (diffusers' ModelMixin and transformers' PreTrainedModel, no variant). A shard index
# (`*.index.json`) stands for the shards it lists. Pickle names count only with `allow_pickle`.
SAFETENSORS_NAMES: dict[str, tuple[str, ...]] = {
    "diffusers": ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors"),
    "transformers": ("model.safetensors", "model.safetensors.index.json"),
}
PICKLE_NAMES: dict[str, tuple[str, ...]] = {
    "diffusers": ("diffusion_pytorch_model.bin",),
    "transformers": ("pytorch_model.bin", "pytorch_model.bin.index.json"),
}


def _looks_like(head: bytes) -> str:
    """What a file that is not safetensors seems to be, from its first bytes; '' when unknown."""
    if head.startswith(b"PK\x03\x04"):
        return " (it looks like a PyTorch zip checkpoint written by torch.save, not safetensors)"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return " (it looks like a pickle, not safetensors)"
    if head.startswith(b"version https://git-lfs"):
        return " (it is a Git LFS pointer, not the weights: fetch them with `git lfs pull`)"
    return ""


def _entry_bytes(path: Path, name: str, entry: object) -> tuple[int, int]:
    """A header entry's (start, end) in the data section, checked against its dtype and shape."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise WeightsFileError(f"{path} has a malformed header: tensor {name!r} needs dtype, shape and data_offsets")
    if not isinstance(entry["dtype"], str):
        raise WeightsFileError(f"{path} has a malformed header: tensor {name!r} has dtype {entry['dtype']!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    integers = all(isinstance(v, list) and all(type(n) is int and n >= 0 for n in v) for v in (shape, offsets))
    if not integers or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise WeightsFileError(
            f"{path} has a malformed header: tensor {name!r} has shape {shape!r} and data_offsets {offsets!r}; "
            "a shape is a list of non-negative integers, data_offsets is [start, end] with start <= end"
        )
    start, end = offsets
    # A dtype newer than this table is left to the loader rather than refused.
    bits = DTYPE_BITS.get(dtype, 0)
    needs = math.prod(shape) * bits
    if bits and needs != (end - start) * 8:
        size = f"{needs // 8} bytes" if needs % 8 == 0 else f"{needs} bits"
        raise WeightsFileError(
            f"{path} has a malformed header: tensor {name!r} is {dtype} {shape}, {size}, "
            f"but its data_offsets span {end - start} bytes"
        )
    return start, end


def check_safetensors(path: Path) -> None:
    """Check a safetensors file's header against its size; raises `WeightsFileError` naming the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(min(size, 8))
        if size < 8:
            raise WeightsFileError(f"{path} is {size} bytes, too short to be a safetensors file{_looks_like(head)}")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise WeightsFileError(
                f"{path} is not a whole safetensors file: its first 8 bytes declare a {n}-byte header, but "
                f"{size - 8} bytes follow{_looks_like(head + f.read(32)) or ' (a truncated or damaged file)'}"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsFileError(
            f"{path} is not a safetensors file: its header is not JSON ({e}){_looks_like(head)}"
        ) from None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path} is not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsFileError(f"{path} has a malformed header: __metadata__ must map names to strings")
    spans = sorted((_entry_bytes(path, name, entry), name) for name, entry in header.items())
    end = 0
    for (start, stop), name in spans:
        if start != end:
            raise WeightsFileError(
                f"{path} has a malformed header: tensor {name!r} starts at byte {start} of the data, not {end} "
                "(tensors are packed end to end)"
            )
        end = stop
    data = size - 8 - n
    if end > data:
        raise WeightsFileError(
            f"{path} is truncated: its header describes {end} bytes of tensor data, but {data} follow it"
        )
    if end < data:
        raise WeightsFileError(f"{path} has {data - end} bytes after its tensor data (a damaged or appended file)")


def check_pickle(path: Path) -> None:
    """Recognise a PyTorch checkpoint by its first bytes, without unpickling it: a zip whose directory
    is intact (torch.save's format), or a legacy pickle."""
    with path.open("rb") as f:
        head = f.read(32)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise WeightsFileError(f"{path} is a truncated or damaged zip checkpoint (its zip directory is missing)")
    elif not (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise WeightsFileError(f"{path} is neither a PyTorch zip checkpoint nor a pickle{_looks_like(head)}")


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise WeightsFileError(f"{index} is not a shard index: {e}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsFileError(f"{index} is not a shard index: it has no weight_map of tensor names to files")
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise WeightsFileError(f"{index} lists the shard {shard.name}, which is not in {index.parent}")
    return shards


def weights_to_load(folder: Path, library: str, *, allow_pickle: bool, explicit: str | None = None) -> list[Path]:
    """The weights files `library` ('diffusers' or 'transformers') loads from a component folder.

    `explicit` is a transformers config's `transformers_weights`, which names the file outright.
    """
    names = (explicit,) if explicit else SAFETENSORS_NAMES[library] + (PICKLE_NAMES[library] if allow_pickle else ())
    found = next((folder / name for name in names if (folder / name).is_file()), None)
    if found is None:
        present = sorted(p.name for p in folder.glob("*.safetensors"))
        raise WeightsFileError(
            f"{folder} has none of the weights files {library} loads ({', '.join(names)})"
            + (f"; its safetensors files are {', '.join(present)}" if present else "")
        )
    return _shards(found) if found.name.endswith(".index.json") else [found]


def check_weights(folder: Path, library: str, *, allow_pickle: bool, explicit: str | None = None) -> None:
    """Check the header of every weights file `library` loads from `folder`; raises `WeightsFileError`."""
    for path in weights_to_load(folder, library, allow_pickle=allow_pickle, explicit=explicit):
        if path.name.endswith(".safetensors"):
            check_safetensors(path)
        else:
            check_pickle(path)
