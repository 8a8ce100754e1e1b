"""Textual-inversion embeddings: local safetensors files, each bound to the token prompts call it up with.

diffusers' `load_textual_inversion` adds the token to the tokenizer and its vector(s) to the text
encoder's input embeddings; a multi-vector embedding becomes `<token> <token>_1 ...` in the prompt.
Every variant built with `from_pipe` shares the tokenizer and encoder, so one load serves all.

A token that is not loaded is not an error to the tokenizer: `<cat-toy>` is read as the characters
`<`, `cat`, `-`, `toy`, `>`, and the image lacks the concept with nothing said. `unknown_placeholders`
finds such words in prompts (the `<...>` convention) so the plan can report them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from diffusers import DiffusionPipeline
from safetensors import SafetensorError, safe_open

from diffgen.generation.weights_check import WeightsFileError, check_safetensors
from diffgen.schemas.job import TextualInversionSpec

# Families whose embeddings diffgen loads: one CLIP text encoder. SDXL's embeddings hold one vector
# per encoder (clip_l, clip_g) and load in two calls; not supported yet.
FAMILIES = ("sd",)
PLACEHOLDER = re.compile(r"<[^<>\s]{1,64}>")


class TextualInversionError(ValueError):
    """An embedding file that is missing, unreadable or does not fit the model; names the field."""


def _vectors(path: Path, field: str) -> tuple[int, ...]:
    """The shape of the file's one embedding tensor, read from its header."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if len(keys) != 1:
                raise TextualInversionError(
                    f"{field}: {path} holds {len(keys)} tensors ({', '.join(keys[:4])}); a textual-inversion "
                    "embedding file holds one (token -> vectors)"
                )
            return tuple(f.get_slice(keys[0]).get_shape())
    except SafetensorError as e:
        raise TextualInversionError(f"{field}: {path}: {e}") from None


def check_textual_inversions(specs: Sequence[TextualInversionSpec], family: str, model_folder: Path) -> None:
    """What can be checked without loading weights: the family takes them, each file exists, its header
    is whole and its one tensor has the text encoder's width."""
    if specs and family not in FAMILIES:
        raise TextualInversionError(
            f"textual_inversions: a {family} model is not supported (embeddings load into SD 1.x/2.x models)"
        )
    config = model_folder / "text_encoder" / "config.json"
    width = json.loads(config.read_text()).get("hidden_size") if specs and config.is_file() else None
    for i, spec in enumerate(specs):
        field = f"textual_inversions.{i}.path"
        path = Path(spec.path)
        if not path.is_file():
            raise TextualInversionError(f"{field}: {spec.path} is not a file")
        try:
            check_safetensors(path)
        except WeightsFileError as e:
            raise TextualInversionError(f"{field}: {e}") from None
        shape = _vectors(path, field)
        if width is not None and (not shape or shape[-1] != width or len(shape) > 2):
            raise TextualInversionError(
                f"{field}: {path} holds vectors of shape {list(shape)}; this model's text encoder takes "
                f"[vectors, {width}]"
            )


def load_textual_inversions(pipe: DiffusionPipeline, specs: Sequence[TextualInversionSpec]) -> None:
    """Load every embedding under its token."""
    for i, spec in enumerate(specs):
        try:
            pipe.load_textual_inversion(spec.path, token=spec.token, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise TextualInversionError(
                f"textual_inversions.{i}: cannot load {spec.path} as {spec.token}: {e}"[:800]
            ) from None


def unknown_placeholders(prompts: Iterable[str | None], tokens: Iterable[str]) -> Counter[str]:
    """`<...>` words in `prompts` that are not a loaded token, with how many prompts use each."""
    loaded = set(tokens)
    found: Counter[str] = Counter()
    for prompt in prompts:
        found.update({p for p in PLACEHOLDER.findall(prompt or "") if p not in loaded})
    return found


def placeholder_warnings(prompts: Iterable[str | None], specs: Sequence[TextualInversionSpec]) -> list[str]:
    """One line per `<...>` word that prompts use but no embedding loads, with how many prompts use it."""
    unknown = unknown_placeholders(prompts, (s.token for s in specs))
    loaded = ", ".join(s.token for s in specs) or "none"
    return [
        f"prompt: {word} in {n} prompt(s) is not a textual_inversions token (loaded: {loaded}); the text encoder "
        "reads it as plain characters"
        for word, n in sorted(unknown.items())
    ]
