"""Textual inversion: a token loaded from a local embedding steers the image; files that cannot load are
refused in the pre-flight naming the field; placeholders no embedding loads are reported."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from safetensors.torch import save_file
import torch

from diffgen.dataset.records import expand
from diffgen.generation.loading import ModelLoadError, preflight
from diffgen.generation.textual_inversion import placeholder_warnings, unknown_placeholders
from diffgen.provenance.png import decode_png
from diffgen.provenance.record import PROVENANCE_KEY, file_sha256
from diffgen.schemas.job import JobSpec
from diffgen.stages.generate import GenerateStage
from diffgen.stages.write import WriteStage
from lab.builders.tiny import build_tiny_embedding

TOKEN = "<tiny-concept>"


def _spec(model, embeddings: list[tuple[Path, str]]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "run_id": "unit",
            "model": {"id": str(model)},
            "sampler": {"scheduler": "euler", "steps": 3, "guidance_scale": 3.0, "width": 32, "height": 32},
            "textual_inversions": [{"path": str(p), "token": t} for p, t in embeddings],
            "provenance": {"watermark": False},
        }
    )


def _images(spec: JobSpec, prompts: list[str]) -> tuple[pa.Table, list[np.ndarray]]:
    records = expand(pa.table({"id": [f"r{i}" for i in range(len(prompts))], "prompt": prompts,
                               "seed": [5] * len(prompts)}), spec)  # fmt: skip
    out = GenerateStage(spec)(records)
    assert out.column("status").to_pylist() == [None] * len(prompts), out.column("error").to_pylist()
    pixels = [np.frombuffer(p, np.uint8).reshape(32, 32, 3).astype(int) for p in out.column("pixels").to_pylist()]
    return out, pixels


def test_the_token_steers_the_image_and_another_embedding_steers_it_elsewhere(tiny_sd, tiny_embedding, tmp_path):
    other = build_tiny_embedding(tiny_sd, tmp_path / "other.safetensors", seed=9)
    _, (with_token, plain) = _images(_spec(tiny_sd, [(tiny_embedding, TOKEN)]), [f"a photo of {TOKEN}", "a photo of"])
    _, (other_token,) = _images(_spec(tiny_sd, [(other, TOKEN)]), [f"a photo of {TOKEN}"])
    _, (unloaded_plain,) = _images(_spec(tiny_sd, []), ["a photo of"])
    assert np.abs(with_token - plain).max() > 10
    assert np.abs(with_token - other_token).max() > 10
    assert np.abs(plain - unloaded_plain).max() <= 2  # loading an embedding changes nothing else


def test_the_index_and_provenance_record_each_embedding(tiny_sd, tiny_embedding, tmp_path):
    spec = _spec(tiny_sd, [(tiny_embedding, TOKEN)])
    generated, _ = _images(spec, [f"a {TOKEN}"])
    row = WriteStage(spec, str(tmp_path / "out"), "unit")(generated).to_pylist()[0]
    expected = [{"token": TOKEN, "path": str(tiny_embedding), "sha256": file_sha256(str(tiny_embedding))}]
    assert row["textual_inversions"] == expected
    record = json.loads(decode_png(Path(row["image_uri"]).read_bytes())[1][PROVENANCE_KEY])
    assert record["textual_inversions"] == expected


def test_files_that_cannot_load_are_refused_in_the_preflight_naming_the_field(tiny_sd, tiny_family, tmp_path):
    wide = tmp_path / "wide.safetensors"
    save_file({TOKEN: torch.zeros(1, 48)}, str(wide))
    two = tmp_path / "two.safetensors"
    save_file({"a": torch.zeros(1, 32), "b": torch.zeros(1, 32)}, str(two))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    cases = [
        (tmp_path / "missing.safetensors", r"^textual_inversions.0.path: .*missing.safetensors is not a file$"),
        (wide, r"^textual_inversions.0.path: .* holds vectors of shape \[1, 48\]; .* takes \[vectors, 32\]$"),
        (two, r"^textual_inversions.0.path: .* holds 2 tensors \(a, b\); a textual-inversion embedding file holds one"),
        (broken, r"^textual_inversions.0.path: "),
    ]
    for path, message in cases:
        with pytest.raises(ModelLoadError, match=message):
            preflight(_spec(tiny_sd, [(path, TOKEN)]))
    sdxl, _ = tiny_family("sdxl")
    with pytest.raises(ModelLoadError, match=r"^textual_inversions: a sdxl model is not supported"):
        preflight(_spec(sdxl, [(wide, TOKEN)]))


def test_placeholders_no_embedding_loads_are_reported_with_their_count():
    prompts = ["a <cat-toy> on a <table>", "<cat-toy> again", "a <tiny-concept>", "I <3 cats", None]
    assert unknown_placeholders(prompts, [TOKEN]) == {"<cat-toy>": 2, "<table>": 1}
    spec = JobSpec.model_validate({"model": {"id": "m"}, "textual_inversions": [{"path": "e.safetensors",
                                                                                  "token": TOKEN}]})  # fmt: skip
    assert placeholder_warnings(prompts, spec.textual_inversions)[0] == (
        "prompt: <cat-toy> in 2 prompt(s) is not a textual_inversions token (loaded: <tiny-concept>); the text "
        "encoder reads it as plain characters"
    )


def test_tokens_must_be_unique_and_single_words():
    with pytest.raises(ValueError, match="textual_inversions: duplicate name"):
        JobSpec.model_validate({"model": {"id": "m"}, "textual_inversions": [
            {"path": "a.safetensors", "token": TOKEN}, {"path": "b.safetensors", "token": TOKEN}]})  # fmt: skip
    with pytest.raises(ValueError, match=r"textual_inversions.0.token"):
        JobSpec.model_validate({"model": {"id": "m"}, "textual_inversions": [{"path": "a.safetensors",
                                                                               "token": "a b"}]})  # fmt: skip
