import numpy as np
import pytest

from lab.micro.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLORS,
    Scene,
    edge_image,
    iou,
    parse_caption,
    render,
    sample_scene,
    scene_for_seed,
    segment,
    vocabulary,
)


def test_a_seed_fixes_the_scene_and_its_pixels():
    a, b = scene_for_seed(7), scene_for_seed(7)
    assert a == b
    assert np.array_equal(render(a)[0], render(b)[0])
    assert scene_for_seed(8) != a


def test_render_paints_the_shape_color_inside_the_mask_and_the_background_outside():
    scene = Scene("square", "red", "large", "center", "blue")
    rgb, mask = render(scene)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and mask.shape == (64, 64)
    inner = rgb[mask & (np.abs(np.gradient(mask.astype(float))[0]) == 0)]
    assert (inner == COLORS["red"]).all(axis=1).mean() > 0.9
    assert (rgb[0, 0] == BACKGROUNDS["blue"]).all()
    # about the area a large square should have (half side 0.19 * 0.85 of 64)
    assert 350 < mask.sum() < 500
    assert mask[32, 32] and not mask[2, 2]


@pytest.mark.parametrize(
    ("position", "quadrant"),
    [("top left", (slice(0, 32), slice(0, 32))), ("bottom right", (slice(32, 64), slice(32, 64)))],
)
def test_position_places_the_shape(position, quadrant):
    _, mask = render(Scene("circle", "green", "small", position, "white"))
    assert mask[quadrant].sum() == mask.sum() > 0


def test_sizes_and_shapes_differ_in_area():
    areas = {
        (shape, size): render(Scene(shape, "red", size, "center", "white"))[1].sum()
        for shape in ATTRIBUTES["shape"]
        for size in ATTRIBUTES["size"]
    }
    for shape in ATTRIBUTES["shape"]:
        assert areas[(shape, "large")] > 1.8 * areas[(shape, "small")]
    assert areas[("star", "large")] < areas[("circle", "large")]


def test_captions_name_every_attribute_and_parse_back():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng)
        assert parse_caption(scene.caption()) == scene.attributes()
        short = scene.caption(size=False, position=False, background=False)
        assert parse_caption(short) == {"shape": scene.shape, "color": scene.color}
    assert Scene("star", "orange", "small", "top", "orange" if False else "white").caption(size=False).startswith("an ")


def test_every_caption_word_is_in_the_vocabulary():
    rng = np.random.default_rng(1)
    words = set(vocabulary())
    for _ in range(100):
        assert set(sample_scene(rng).caption().split()) <= words


def test_an_invisible_or_unknown_scene_is_refused_by_name():
    with pytest.raises(ValueError, match="invisible"):
        Scene("star", "red", "small", "top", "red")
    with pytest.raises(ValueError, match="shape 'hexagon'"):
        Scene("hexagon", "red", "small", "top", "blue")
    with pytest.raises(ValueError, match="unknown attributes"):
        sample_scene(np.random.default_rng(0), texture="wood")


def test_segment_recovers_the_mask_of_a_render_and_edges_outline_it():
    for seed in range(20):
        rgb, mask = render(scene_for_seed(seed))
        assert iou(segment(rgb), mask) > 0.9
    edges = edge_image(mask)[..., 0] > 0
    assert 0 < edges.sum() < mask.sum() + 4 * np.sqrt(mask.sum()) * 4
    assert not edges[mask & ~edges].any()
