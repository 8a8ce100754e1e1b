"""The committed micro family (models/): it loads through diffgen's own loader and still draws, follows
its control masks and scores, on a handful of held-out scenes. Thresholds sit well below what the
evaluation job measured (models/micro-sd/evaluation.json), so they catch a broken load or sampler,
not noise."""

from dataclasses import replace

import numpy as np
import pytest

from diffgen.generation.loading import ModelLoadError, load_pipeline_set, placement, preflight
from diffgen.generation.sampling import Request, check
from diffgen.metrics.clip_model import ClipModel
from diffgen.metrics.clip_score import clip_score_kernel
from diffgen.schemas.job import ComputeSpec
from lab.micro.evaluate import EvalConfig, attribute_accuracy, eval_job_spec, eval_scenes, generate_images
from lab.micro.models import AttributeJudge, micro_tokenizer
from lab.micro.world import iou, render, segment, vocabulary
from tests.conftest import REPO

MODELS = REPO / "models"
CONFIG = EvalConfig(batch_size=8)


@pytest.fixture(scope="module")
def judge():
    return AttributeJudge.load(MODELS / "micro-judge")


@pytest.fixture(scope="module")
def pipes():
    return load_pipeline_set(eval_job_spec(MODELS / "micro-sd", CONFIG), placement(ComputeSpec(device="cpu")))


def test_micro_world_words_are_whole_tokens_and_any_text_tokenizes():
    tokenizer = micro_tokenizer()
    lengths = {word: len(tokenizer(word, add_special_tokens=False).input_ids) for word in vocabulary()}
    # Every word whole, "triangle" too (its first merge chain collides with an earlier word's; the
    # builder adds merges of its actual pieces).
    assert {word for word, n in lengths.items() if n > 1} == set()
    ids = tokenizer("a zebra 🦓 in the rain, ünïcode").input_ids
    assert len(ids) > 5 and tokenizer.unk_token_id not in ids[1:-1]


def test_the_committed_tokenizer_is_the_one_the_code_builds():
    saved = ClipModel(MODELS / "micro-clip").tokenizer
    built = micro_tokenizer()
    text = "a small red star at the top left on a blue background"
    assert saved(text).input_ids == built(text).input_ids


def test_the_judge_reads_real_renders(judge):
    scenes = eval_scenes(64, offset=5_000_000)
    accuracy = attribute_accuracy(judge, [render(s)[0] for s in scenes], scenes)
    assert accuracy["shape_and_color"] >= 0.95
    assert accuracy["position"] >= 0.95


def test_generated_scenes_show_the_prompted_shape_color_and_background(pipes, judge):
    # evaluation.json, 1000 held-out prompts: shape and color right in about 3 of 4, color and
    # background in all but a few.
    scenes = eval_scenes(8)
    images, _ = generate_images(pipes, [s.caption() for s in scenes], CONFIG, CONFIG.guidance_scale)
    accuracy = attribute_accuracy(judge, images, scenes)
    assert accuracy["shape_and_color"] >= 0.5
    assert accuracy["color"] >= 0.75
    assert accuracy["background"] >= 0.75


def test_the_controlnet_places_the_shape_on_its_mask():
    pipes = load_pipeline_set(
        eval_job_spec(MODELS / "micro-sd", CONFIG, MODELS / "micro-controlnet"), placement(ComputeSpec(device="cpu"))
    )
    scenes = eval_scenes(4, offset=3_000_000)
    masks = [render(s)[1] for s in scenes]
    prompts = [s.caption(size=False, position=False) for s in scenes]
    images, _ = generate_images(pipes, prompts, CONFIG, CONFIG.guidance_scale, masks)
    # evaluation.json: mean IoU about 0.75 with the ControlNet, 0.05 for the same prompts without it
    assert np.mean([iou(segment(img), m) for img, m in zip(images, masks)]) >= 0.55


def test_the_micro_clip_prefers_the_matching_caption():
    clip = ClipModel(MODELS / "micro-clip")
    scenes = eval_scenes(32, offset=6_000_000)
    images = clip.image_embeddings([render(s)[0] for s in scenes])
    texts = clip.text_embeddings([s.caption() for s in scenes])
    matching = clip_score_kernel(images, texts)
    shuffled = clip_score_kernel(images, np.roll(texts, 1, axis=0))
    assert matching.mean() > shuffled.mean() + 2.0


def test_a_row_at_a_size_the_model_was_not_trained_at_is_rejected_with_the_supported_sizes(pipes):
    row = Request(prompt="a red star", negative_prompt="", seed=0, guidance_scale=5.0, steps=2, width=96, height=64)
    assert "96x64 is not a size this model was trained at (supported: 64x64)" in check(pipes, row)
    assert check(pipes, replace(row, width=64)) is None


def test_a_size_the_model_was_not_trained_at_is_refused_by_name_unless_allowed():
    spec = eval_job_spec(MODELS / "micro-sd", CONFIG)
    bigger = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"width": 128, "height": 128})})
    with pytest.raises(ModelLoadError, match=r"sampler.width, height: 128x128 .*supported: 64x64"):
        preflight(bigger)
    allowed = bigger.model_copy(
        update={"sampler": bigger.sampler.model_copy(update={"allow_untrained_size": True})}
    )
    preflight(allowed)
