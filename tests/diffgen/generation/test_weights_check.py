"""Weights files checked from their headers: refused exactly when the safetensors library refuses them."""

import json
import struct

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from diffgen.generation.weights_check import (
    WeightsFileError,
    check_pickle,
    check_safetensors,
    check_weights,
    weights_to_load,
)


def _raw(path, header: dict | bytes, data: bytes):
    """A file laid out as safetensors is: u64 header length, JSON header, tensor bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _u8(start: int, end: int, shape: list[int] | None = None) -> dict:
    return {"dtype": "U8", "shape": [end - start] if shape is None else shape, "data_offsets": [start, end]}


@pytest.fixture
def whole(tmp_path):
    path = tmp_path / "whole.safetensors"
    save_file({"weight": torch.randn(16, 8), "bias": torch.zeros(8, dtype=torch.float16)}, path)
    return path


def _safetensors_refuses(path) -> bool:
    try:
        with safe_open(path, "pt") as f:
            list(f.keys())
    except SafetensorError:
        return True
    return False


DAMAGED = {
    "truncated": (
        lambda p, b: p.write_bytes(b[:-10]),
        r"is truncated: its header describes 528 bytes of tensor data, but 518 follow it$",
    ),
    "appended": (lambda p, b: p.write_bytes(b + b"xx"), r"has 2 bytes after its tensor data"),
    "empty": (lambda p, b: p.write_bytes(b""), r"is 0 bytes, too short to be a safetensors file"),
    "cut inside the header": (lambda p, b: p.write_bytes(b[:40]), r"declare a \d+-byte header, but 32 bytes follow"),
    "garbage": (lambda p, b: p.write_bytes(bytes(range(256)) * 4), r"a \d+-byte header, but 1016 bytes follow"),
    "a pickle": (lambda p, b: torch.save({"w": torch.zeros(2)}, p), r"looks like a PyTorch zip checkpoint"),
    "a legacy pickle": (
        lambda p, b: torch.save({"w": torch.zeros(2)}, p, _use_new_zipfile_serialization=False),
        r"it looks like a pickle, not safetensors",
    ),
    "a Git LFS pointer": (
        lambda p, b: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n"),
        r"is a Git LFS pointer, not the weights",
    ),
    "header not JSON": (lambda p, b: _raw(p, b"{not json}", b""), r"its header is not JSON"),
    "header a list": (lambda p, b: _raw(p, b"[]", b""), r"its header is not a JSON object"),
    "entry missing a key": (lambda p, b: _raw(p, {"a": {"dtype": "U8", "shape": [2]}}, b"xx"), r"'a' needs dtype"),
    "dtype not a string": (lambda p, b: _raw(p, {"a": {**_u8(0, 2), "dtype": 8}}, b"xx"), r"'a' has dtype 8"),
    "negative shape": (lambda p, b: _raw(p, {"a": _u8(0, 2, [-2])}, b"xx"), r"'a' has shape \[-2\]"),
    "offsets backwards": (lambda p, b: _raw(p, {"a": _u8(2, 0, [0])}, b"xx"), r"data_offsets \[2, 0\]"),
    "a gap": (lambda p, b: _raw(p, {"a": _u8(0, 2), "b": _u8(3, 5)}, b"x" * 5), r"'b' starts at byte 3 .*not 2"),
    "overlap": (lambda p, b: _raw(p, {"a": _u8(0, 2), "b": _u8(1, 3)}, b"x" * 3), r"'b' starts at byte 1"),
    "dtype and span disagree": (
        lambda p, b: _raw(p, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"x" * 4),
        r"'a' is F32 \[2\], 8 bytes, but its data_offsets span 4 bytes",
    ),
    "metadata not strings": (lambda p, b: _raw(p, {"__metadata__": {"k": 1}}, b""), r"__metadata__ must map"),
}


@pytest.mark.parametrize("damage", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_file_is_refused_naming_it_and_what_is_wrong(whole, damage):
    make, message = DAMAGED[damage]
    make(whole, whole.read_bytes())
    with pytest.raises(WeightsFileError, match=message) as err:
        check_safetensors(whole)
    assert str(err.value).startswith(str(whole))
    # Never stricter than the loader: what the check refuses, safetensors refuses too.
    assert _safetensors_refuses(whole)


VALID = {
    "saved by safetensors": lambda p: save_file({"w": torch.randn(3, 5)}, p),
    "no tensors": lambda p: _raw(p, {}, b""),
    "metadata only": lambda p: _raw(p, {"__metadata__": {"format": "pt"}}, b""),
    "empty tensors": lambda p: _raw(p, {"a": _u8(0, 0, [0, 4]), "b": _u8(0, 0, [0]), "c": _u8(0, 2)}, b"xx"),
    "a scalar": lambda p: _raw(p, {"a": _u8(0, 1, [])}, b"x"),
    "a padded header": lambda p: _raw(p, json.dumps({"a": _u8(0, 2)}).encode() + b"      ", b"xx"),
    "4-bit floats": lambda p: _raw(p, {"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"xx"),
    "extra entry keys": lambda p: _raw(p, {"a": {**_u8(0, 2), "note": 1}}, b"xx"),
}


@pytest.mark.parametrize("kind", VALID, ids=list(VALID))
def test_every_file_safetensors_reads_passes(tmp_path, kind):
    path = VALID[kind](tmp_path / "valid.safetensors") or tmp_path / "valid.safetensors"
    assert not _safetensors_refuses(path)
    check_safetensors(path)


def test_a_large_file_is_checked_from_its_header_alone(tmp_path):
    """A 4 GiB sparse file: only its header is read, so the check takes milliseconds."""
    import time

    path = tmp_path / "large.safetensors"
    n = 2**31
    _raw(path, {"a": {"dtype": "F16", "shape": [n // 2], "data_offsets": [0, n]}, "b": _u8(n, 2 * n, [n])}, b"")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size + 2 * n)
    started = time.perf_counter()
    check_safetensors(path)
    assert time.perf_counter() - started < 1.0
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 1)
    with pytest.raises(WeightsFileError, match=f"describes {2 * n} bytes of tensor data, but {2 * n - 1} follow"):
        check_safetensors(path)


def test_pickle_checkpoints_are_recognised_by_their_bytes_without_unpickling(tmp_path):
    zipped, legacy = tmp_path / "zipped.bin", tmp_path / "legacy.bin"
    torch.save({"w": torch.zeros(4)}, zipped)
    torch.save({"w": torch.zeros(4)}, legacy, _use_new_zipfile_serialization=False)
    check_pickle(zipped)
    check_pickle(legacy)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(zipped.read_bytes()[:-30])
    with pytest.raises(WeightsFileError, match=rf"^{truncated} is a truncated or damaged zip checkpoint"):
        check_pickle(truncated)
    lfs = tmp_path / "lfs.bin"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(WeightsFileError, match=rf"^{lfs} is neither a PyTorch zip checkpoint nor a pickle .*git lfs"):
        check_pickle(lfs)


def test_the_files_each_library_loads_and_a_shard_index(tmp_path, whole):
    folder = tmp_path / "unet"
    folder.mkdir()
    with pytest.raises(WeightsFileError, match=r"has none of the weights files diffusers loads \(diffusion_pytorch"):
        weights_to_load(folder, "diffusers", allow_pickle=False)
    torch.save({}, folder / "diffusion_pytorch_model.bin")
    (folder / "decoy.safetensors").write_bytes(b"")
    # Without allow_pickle the pickle does not count, and a safetensors file of another name is not loaded.
    with pytest.raises(WeightsFileError, match=r"its safetensors files are decoy.safetensors$"):
        weights_to_load(folder, "diffusers", allow_pickle=False)
    assert weights_to_load(folder, "diffusers", allow_pickle=True) == [folder / "diffusion_pytorch_model.bin"]
    for shard in ("a.safetensors", "b.safetensors"):
        (folder / shard).write_bytes(whole.read_bytes())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x": "a.safetensors", "y": "b.safetensors", "z": "a.safetensors"}}))
    shards = [folder / "a.safetensors", folder / "b.safetensors"]
    assert weights_to_load(folder, "diffusers", allow_pickle=False) == shards
    check_weights(folder, "diffusers", allow_pickle=False)
    (folder / "b.safetensors").write_bytes(whole.read_bytes()[:-1])
    with pytest.raises(WeightsFileError, match=r"b.safetensors is truncated"):
        check_weights(folder, "diffusers", allow_pickle=False)
    (folder / "b.safetensors").unlink()
    with pytest.raises(WeightsFileError, match=rf"^{index} lists the shard b.safetensors, which is not in {folder}$"):
        check_weights(folder, "diffusers", allow_pickle=False)
    # transformers: model.safetensors first, or the file a config's `transformers_weights` names.
    (folder / "model.safetensors").write_bytes(whole.read_bytes())
    (folder / "custom.safetensors").write_bytes(b"")
    assert weights_to_load(folder, "transformers", allow_pickle=False) == [folder / "model.safetensors"]
    with pytest.raises(WeightsFileError, match=r"custom.safetensors is 0 bytes"):
        check_weights(folder, "transformers", allow_pickle=False, explicit="custom.safetensors")
