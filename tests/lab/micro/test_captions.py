"""Training captions vary widely, stay inside the tokenizer's length and single-token words, and never
produce a prompt of the held-out paraphrase set (models/micro-sd/eval_paraphrases.jsonl)."""

import numpy as np
import pytest

from lab.micro.captions import JUNK_WORDS, POSITION_WORDS, SHAPE_WORDS, training_caption, training_words, words_of
from lab.micro.evaluate import PARAPHRASES, load_paraphrases
from lab.micro.models import TEXT_MAX_LENGTH, micro_tokenizer
from lab.micro.world import Scene, sample_scene
from tests.conftest import REPO


@pytest.fixture(scope="module")
def paraphrases() -> list[dict]:
    return load_paraphrases(REPO / "models" / "micro-sd" / PARAPHRASES)


@pytest.fixture(scope="module")
def captions() -> list[str]:
    rng = np.random.default_rng(0)
    return [training_caption(sample_scene(rng), rng, keep=0.75, varied=0.5) for _ in range(5000)]


def test_every_paraphrase_holds_a_word_no_training_caption_can_hold(paraphrases):
    assert len(paraphrases) >= 300
    known = training_words() | set(JUNK_WORDS)
    assert [r["prompt"] for r in paraphrases if set(words_of(r["prompt"])) <= known] == []


def test_no_training_caption_is_a_paraphrase(paraphrases, captions):
    held_out = {r["prompt"].lower() for r in paraphrases}
    assert not held_out & {c.lower() for c in captions}


def test_the_paraphrase_set_covers_every_shape_and_each_kind_of_rewording(paraphrases):
    shapes = {r["shape"] for r in paraphrases}
    kinds = {k for r in paraphrases for k in r["kinds"]}
    assert shapes == set(SHAPE_WORDS)
    assert {"filler", "number", "order", "capitals", "commas", "unseen"} <= kinds


def test_training_words_are_single_tokens_and_captions_fit_the_text_length(captions):
    tokenizer = micro_tokenizer()
    split = [w for w in training_words() if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    assert split == []
    assert max(len(tokenizer(c).input_ids) for c in captions) <= TEXT_MAX_LENGTH


def test_captions_vary_and_name_what_they_must():
    rng = np.random.default_rng(1)
    scene = Scene("circle", "purple", "large", "top left", "gray")
    drawn = {training_caption(scene, rng, keep=0.0, varied=1.0, always=("position",)) for _ in range(300)}
    assert len(drawn) > 100
    places = POSITION_WORDS["top left"]
    assert all(any(p in c for p in places) for c in drawn), [c for c in drawn if not any(p in c for p in places)]
    assert all(any(w in words_of(c) for w in SHAPE_WORDS["circle"]) for c in drawn)
    assert all("purple" in c or "violet" in c for c in drawn)
