"""Every model family with tiny real components loaded from disk: text-to-image, guidance on and off,
img2img, inpaint, and ControlNet (single and multi) through diffusers' own pipeline classes."""

import numpy as np
import pytest
from PIL import Image

from diffgen.generation.families import FAMILIES, MODES, family_for, mode_for
from diffgen.generation.loading import ModelLoadError, load_controlnet, load_pipeline_set, model_family, placement
from diffgen.generation.sampling import Request, generate
from diffgen.generation.variants import PipelineSet
from diffgen.schemas.job import ComputeSpec, ControlNetSpec, JobSpec

TOL = 2  # uint8 levels; seeded CPU runs agree to ~1e-6 before quantisation
SIZE = 32
STEPS = 2


def _noise(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((SIZE, SIZE, 3)) * 255).astype(np.uint8))


def _square() -> Image.Image:
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[8:24, 8:24] = 255
    return Image.fromarray(pixels)


def _req(*, guidance=3.0, seed=1, **inputs) -> Request:
    return Request("a red circle", "blurry", seed, guidance, STEPS, SIZE, SIZE, **inputs)


def _diff(a, b) -> float:
    return np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max()


@pytest.fixture(scope="module", params=list(FAMILIES))
def outputs(request, tiny_family):
    """One family's images for every kind of request, computed once."""
    name = request.param
    pipeline, controlnet = tiny_family(name)
    spec = JobSpec.model_validate({"model": {"id": str(pipeline)}})
    where = placement(ComputeSpec())
    base = load_pipeline_set(spec, where)
    assert base.family.name == name
    cn_spec = ControlNetSpec(name="a", model={"id": str(controlnet)})
    model = load_controlnet(cn_spec, 0, base.family, where)
    single = PipelineSet(base.base, base.family, [(cn_spec, model)])
    off = PipelineSet(base.base, base.family, [(cn_spec.model_copy(update={"conditioning_scale": 0.0}), model)])
    b_spec = ControlNetSpec(name="b", model={"id": str(controlnet)}, conditioning_scale=0.7, required=False)
    multi = PipelineSet(base.base, base.family, [(cn_spec, model), (b_spec, model)])

    ctrl1, ctrl2 = _noise(0), _square()
    init1, init2 = Image.new("RGB", (40, 40), (220, 40, 40)), _noise(5).resize((48, 48))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, SIZE // 2, SIZE))
    out = {"name": name, "pipes": base}
    out["cfg"], out["no_cfg"] = generate(base, [_req(), _req(guidance=1.0)], 4)
    # Strength 0.5, not 0.8: with 2 steps diffusers' flow-matching img2img rounds 0.8 down to
    # starting from pure noise, which would ignore the init image.
    out["img2img_1"], out["img2img_2"], out["inpaint"] = generate(
        base,
        [
            _req(strength=0.5, init_image=init1),
            _req(strength=0.5, init_image=init2),
            _req(strength=0.5, init_image=init1, mask_image=mask),
        ],
        4,
    )
    together = generate(single, [_req(control_images=(ctrl1,)), _req(control_images=(ctrl2,), seed=2)], 4)
    out["control_1"], out["control_2_seed_2"] = together
    out["control_1_alone"], out["control_2_seed_2_alone"] = (
        generate(single, [r], 1)[0] for r in [_req(control_images=(ctrl1,)), _req(control_images=(ctrl2,), seed=2)]
    )
    out["control_2"] = generate(single, [_req(control_images=(ctrl2,))], 1)[0]
    out["control_scale_0"] = generate(off, [_req(control_images=(ctrl1,))], 1)[0]
    out["multi"], out["multi_b_absent"] = generate(
        multi, [_req(control_images=(ctrl1, ctrl2)), _req(control_images=(ctrl1, None))], 4
    )
    return out


def test_every_request_kind_yields_an_image_of_the_requested_size(outputs):
    for key, result in outputs.items():
        if key in ("name", "pipes"):
            continue
        assert result.error is None, (outputs["name"], key, result.error)
        assert result.pixels.shape == (SIZE, SIZE, 3) and result.pixels.dtype == np.uint8
    f = FAMILIES[outputs["name"]]
    assert outputs["img2img_1"].pipeline_class == f.pipelines["img2img"].__name__
    assert outputs["inpaint"].pipeline_class == f.pipelines["inpaint"].__name__
    assert outputs["control_1"].pipeline_class == f.pipelines["controlnet"].__name__
    assert outputs["cfg"].pipeline_class == f.pipelines["text2img"].__name__


def test_guidance_on_and_off_give_different_images_from_one_seed(outputs):
    assert _diff(outputs["cfg"], outputs["no_cfg"]) > TOL
    # Flux's guidance is a distilled embedding: it never runs the unconditional pass.
    assert outputs["cfg"].cfg is (outputs["name"] != "flux")
    assert outputs["no_cfg"].cfg is False


def test_img2img_depends_on_the_init_image_and_inpaint_differs(outputs):
    assert _diff(outputs["img2img_1"], outputs["img2img_2"]) > TOL
    assert _diff(outputs["img2img_1"], outputs["inpaint"]) > TOL


def test_the_controlnet_conditions_the_image(outputs):
    assert _diff(outputs["control_1"], outputs["control_2"]) > TOL
    assert _diff(outputs["control_1"], outputs["cfg"]) > TOL


def test_a_controlnet_at_scale_0_gives_the_plain_pipelines_image(outputs):
    assert _diff(outputs["control_scale_0"], outputs["cfg"]) <= TOL


def test_controlnet_images_do_not_depend_on_their_batch(outputs):
    assert _diff(outputs["control_1"], outputs["control_1_alone"]) <= TOL
    assert _diff(outputs["control_2_seed_2"], outputs["control_2_seed_2_alone"]) <= TOL


def test_multi_controlnet_uses_both_and_an_absent_optional_one_changes_nothing(outputs):
    assert _diff(outputs["multi"], outputs["control_1"]) > TOL
    assert _diff(outputs["multi_b_absent"], outputs["control_1"]) <= TOL


def test_modes_and_their_pipeline_classes():
    assert mode_for(init_image=False, mask_image=False, control=False) == "text2img"
    assert mode_for(init_image=True, mask_image=True, control=True) == "controlnet_inpaint"
    for family in FAMILIES.values():
        assert set(family.pipelines) <= set(MODES)
    assert "controlnet_img2img" not in FAMILIES["sd3"].pipelines


def test_an_unknown_family_lists_the_choices():
    with pytest.raises(ModelLoadError) as err:
        model_family({"_class_name": "KandinskyPipeline"})
    message = str(err.value)
    assert "Unknown pipeline class 'KandinskyPipeline'" in message
    for name in ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline", "FluxPipeline"):
        assert name in message
    assert family_for("FluxPipeline").name == "flux"


def test_sizes_the_family_cannot_take_are_rejected_naming_the_multiple(outputs):
    pipes = outputs["pipes"]
    multiple = {"sd": 8, "sdxl": 8, "sd3": 4, "flux": 8}[outputs["name"]]
    (bad,) = generate(pipes, [Request("p", "", 1, 3.0, 1, SIZE + multiple // 2, SIZE, 0.0)], 1)
    assert bad.rejected and bad.pixels is None
    assert f"is not divisible by {multiple}" in bad.error
