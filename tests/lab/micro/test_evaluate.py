"""The evaluation's pure parts: accuracies per prompted value, the paraphrase set's reader and score,
and the targets the issue sets."""

import json

import pytest

from lab.micro.evaluate import TARGETS, accuracy_by_prompted, accuracy_of, load_paraphrases, paraphrase_accuracy
from lab.micro.world import Scene


def test_accuracy_counts_shape_color_and_position_together_and_per_prompted_value():
    scenes = [Scene("circle", "red", "small", "top", "blue"), Scene("square", "red", "small", "left", "blue")]
    reads = [s.attributes() for s in scenes]
    reads[1] = {**reads[1], "position": "right"}
    accuracy = accuracy_of(reads, scenes)
    assert accuracy["shape_and_color"] == 1.0 and accuracy["shape_color_position"] == 0.5
    assert accuracy_by_prompted(reads, scenes, "position") == {"top": 1.0, "left": 0.0}


def test_paraphrases_are_scored_on_what_each_prompt_names(tmp_path):
    rows = [{"prompt": "a picture of a red disc", "shape": "circle", "color": "red", "kinds": ["filler"]},
            {"prompt": "1 blue box, top", "shape": "square", "color": "blue", "position": "top",
             "kinds": ["number"]}]  # fmt: skip
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reads = [{"shape": "circle", "color": "red", "position": "left"}, {"shape": "circle", "color": "blue",
                                                                       "position": "top"}]  # fmt: skip
    score = paraphrase_accuracy(reads, load_paraphrases(path))
    assert score["shape_and_color"] == 0.5
    assert score["named_attribute"]["position"] == {"prompts": 1, "right": 1.0}
    assert score["shape_and_color_by_kind"] == {"filler": 1.0, "number": 0.0}


def test_a_paraphrase_row_with_an_unknown_value_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "x", "shape": "hexagon", "color": "red", "kinds": []}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: shape 'hexagon' is not one of circle"):
        load_paraphrases(path)


def test_the_targets_are_the_issues():
    assert {path: (op, value) for path, op, value in TARGETS.values()} == {
        "attribute_accuracy.guided.position": (">=", 0.80),
        "attribute_accuracy.guided_worst_shape": (">=", 0.85),
        "attribute_accuracy.guided.shape_and_color": (">=", 0.95),
        "attribute_accuracy.guidance_gain_shape_color_position": (">=", 0.10),
        "paraphrases.shape_and_color": (">=", 0.85),
        "controlnet_mask_iou.with_controlnet_mean": (">=", 0.80),
        "speed.seconds_per_image": ("<", 1.0),
    }
