"""Sampling with a tiny real pipeline loaded from disk: determinism, batch invariance, prompt truncation."""

import inspect
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from diffgen.generation.loading import load_pipeline, placement
from diffgen.generation.sampling import Request, generate, prompt_limits, prompt_truncation
from diffgen.schemas.job import ComputeSpec, ModelSpec

TOL = 2  # uint8 levels; seeded CPU runs agree to ~1e-6 before quantisation


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    return load_pipeline(ModelSpec(id=str(tiny_sd)), placement(ComputeSpec()))


def _req(seed, prompt="a red circle", guidance=3.0, size=32, steps=4):
    return Request(prompt, "", seed, guidance, steps, size, size)


def test_images_have_the_requested_size(pipe):
    out = generate(pipe, [_req(1, size=32), _req(2, size=48)], max_batch=4)
    assert out[0].pixels.shape == (32, 32, 3) and out[1].pixels.shape == (48, 48, 3)
    assert all(r.pixels.dtype == np.uint8 and r.error is None for r in out)


def test_an_image_does_not_depend_on_its_batch(pipe):
    requests = [_req(s, prompt=f"prompt {s}") for s in range(5)]
    together = generate(pipe, requests, max_batch=5)
    alone = [generate(pipe, [r], max_batch=1)[0] for r in requests]
    pairs = generate(pipe, requests[::-1], max_batch=2)[::-1]
    for a, b, c in zip(together, alone, pairs):
        assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max() <= TOL
        assert np.abs(a.pixels.astype(int) - c.pixels.astype(int)).max() <= TOL


def test_seed_and_guidance_change_the_image(pipe):
    base, other_seed, no_cfg = generate(pipe, [_req(1), _req(2), _req(1, guidance=1.0)], max_batch=4)
    assert np.abs(base.pixels.astype(int) - other_seed.pixels.astype(int)).mean() > 5
    assert np.abs(base.pixels.astype(int) - no_cfg.pixels.astype(int)).max() > TOL


def test_mixed_requests_keep_their_order(pipe):
    requests = [_req(1, size=32), _req(2, size=48), _req(3, size=32, steps=3), _req(4, size=48)]
    out = generate(pipe, requests, max_batch=8)
    assert [r.pixels.shape[0] for r in out] == [32, 48, 32, 48]
    grouped = generate(pipe, [requests[1], requests[3]], max_batch=8)
    assert np.abs(out[3].pixels.astype(int) - grouped[1].pixels.astype(int)).max() <= TOL


def test_a_size_the_vae_cannot_take_is_rejected_alone(pipe):
    out = generate(pipe, [_req(1, size=32), _req(2, size=30)], max_batch=4)
    assert out[0].error is None and not out[0].rejected
    assert out[1].pixels is None and out[1].rejected
    assert out[1].error.startswith("width, height: 30x30 is not divisible by 8")


def test_a_failing_group_fails_only_its_records(pipe):
    # diffusers itself refuses strength > 1 inside the call: a sampler error, not an input check.
    init = Image.new("RGB", (32, 32), (200, 30, 30))
    bad = Request("p", "", 2, 3.0, 4, 32, 32, strength=1.5, init_image=init)
    out = generate(pipe, [_req(1, size=32), bad], max_batch=4)
    assert out[0].error is None
    assert out[1].pixels is None and not out[1].rejected and "ValueError" in out[1].error


def test_guidance_at_most_1_skips_the_unconditional_pass(pipe):
    batches = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        on, off, edge = generate(pipe, [_req(1, guidance=3.0), _req(2, guidance=1.0), _req(3, guidance=0.5)], 1)
    finally:
        hook.remove()
    steps = 4
    assert batches == [1] * steps + [1] * steps + [2] * steps  # groups run in guidance order: 0.5, 1.0, 3.0
    assert (on.cfg, off.cfg, edge.cfg) == (True, False, False)


def _diffusers_cuts(pipe, prompt: str, caplog) -> set[str]:
    """Which kinds of encoder diffusers itself says it truncated `prompt` for ('clip', 't5'), from its warnings."""
    params = inspect.signature(pipe.encode_prompt).parameters
    defaults = {"prompt_2": None, "prompt_3": None, "device": torch.device("cpu"), "num_images_per_prompt": 1,
                "do_classifier_free_guidance": False}  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diffusers"), torch.inference_mode():
        pipe.encode_prompt(prompt=prompt, **{k: v for k, v in defaults.items() if k in params})
    marks = {"clip": "CLIP can only handle", "t5": "`max_sequence_length` is set to"}
    return {kind for kind, mark in marks.items() if mark in caplog.text}


@pytest.mark.parametrize(
    "family, limits",
    [
        ("sd", {"tokenizer": 77}),
        ("sdxl", {"tokenizer": 77, "tokenizer_2": 77}),
        ("sd3", {"tokenizer": 77, "tokenizer_2": 77, "tokenizer_3": 256}),
        ("flux", {"tokenizer": 77, "tokenizer_2": 512}),
    ],
)
def test_truncation_is_recorded_exactly_where_diffusers_cuts(tiny_family, caplog, family, limits):
    """CLIP at its tokenizer's 77, T5 at the pipeline's default max_sequence_length (SD3 256, Flux 512)."""
    pipe = load_pipeline(ModelSpec(id=str(tiny_family(family)[0])), placement(ComputeSpec()))
    found = prompt_limits(pipe)
    assert {name: limit for name, _, limit in found} == limits
    kind = {name: "t5" if "T5" in type(tokenizer).__name__ else "clip" for name, tokenizer, _ in found}
    # Around every limit: one character per token in both tiny tokenizers, so n characters straddle it.
    lengths = sorted({n for limit in limits.values() for n in range(limit - 3, limit + 1)} | {5})
    cut_at = {}
    for n in lengths:
        note = prompt_truncation(found, "x" * n)
        ours = {kind[name] for name in limits if note is not None and f"{name}: " in note}
        assert ours == _diffusers_cuts(pipe, "x" * n, caplog), (n, note)
        for name in limits:
            if note is not None and f"{name}: " in note and name not in cut_at:
                cut_at[name] = n
    assert prompt_truncation(found, "x" * 5) is None
    # Every encoder's boundary lies inside its window: the window's first length fits, a later one is cut.
    assert {name: limit - 3 < cut_at.get(name, 0) <= limit for name, limit in limits.items()} == dict.fromkeys(
        limits, True
    )
