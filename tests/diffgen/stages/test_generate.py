"""The generate stage on small Arrow tables with the tiny SD model and ControlNet: input images by URI,
per-row rejection, mixed batches, and the columns it records."""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from diffgen.dataset.records import expand
from diffgen.schemas.job import JobSpec
from diffgen.schemas.provenance import ProvenanceSpec
from diffgen.schemas.record import INDEX_SCHEMA
from diffgen.stages.generate import GenerateStage, default_cpu_threads
from diffgen.stages.write import WriteStage

TOL = 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    folder: Path = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    square = np.zeros((32, 32, 3), np.uint8)
    square[8:24, 8:24] = 255
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    files = {
        "noise": Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)),
        "square": Image.fromarray(square),
        "init": Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)),
        "mask": Image.fromarray(mask),
    }
    paths = {}
    for name, image in files.items():
        image.save(folder / f"{name}.png")
        paths[name] = str(folder / f"{name}.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    paths["corrupt"] = str(folder / "corrupt.png")
    paths["missing"] = str(folder / "missing.png")
    return paths


def _spec(tiny_sd, tiny_controlnet, *, required=True, **sampler) -> JobSpec:
    return JobSpec.model_validate(
        {
            "run_id": "unit",
            "model": {"id": str(tiny_sd)},
            "sampler": {"steps": 2, "guidance_scale": 3.0, "width": 32, "height": 32, "scheduler": "euler", **sampler},
            "controlnets": [{"name": "edges", "model": {"id": str(tiny_controlnet)}, "required": required}],
            "compute": {"batch_size": 8},
            "provenance": {"allow_unwatermarked": True},  # 32 px is below the watermark's 64
        }
    )


def _table(rows: list[dict]) -> pa.Table:
    # from_pylist takes its columns from the first row only.
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows])


def _run(spec: JobSpec, rows: list[dict], stage: GenerateStage | None = None) -> pa.Table:
    stage = stage or GenerateStage(spec)
    return stage(expand(_table(rows), spec))


def _pixels(table: pa.Table) -> dict[str, np.ndarray]:
    out = {}
    for row in table.to_pylist():
        if row["pixels"] is not None:
            out[row["id"]] = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3).astype(int)
    return out


@pytest.fixture(scope="module")
def optional_stage(tiny_sd, tiny_controlnet):
    spec = _spec(tiny_sd, tiny_controlnet, required=False)
    stage = GenerateStage(spec)
    stage.setup()
    return spec, stage


def test_a_mixed_batch_gives_the_same_images_as_each_group_alone(optional_stage, inputs):
    spec, stage = optional_stage
    rows = [
        {"id": "plain-32", "prompt": "a cat", "control_image": None},
        {"id": "edges-48", "prompt": "a dog", "control_image": inputs["noise"], "width": 48, "height": 48},
        {"id": "square-32", "prompt": "a cat", "control_image": inputs["square"]},
        {"id": "plain-48", "prompt": "a dog", "control_image": None, "width": 48, "height": 48},
        {"id": "edges-nocfg", "prompt": "a cat", "control_image": inputs["noise"], "guidance_scale": 1.0},
        {"id": "img2img", "prompt": "a cat", "control_image": None, "init_image": inputs["init"]},
    ]
    mixed = _run(spec, rows, stage)
    assert mixed.column("status").to_pylist() == [None] * len(rows)
    together = _pixels(mixed)
    alone = {}
    for row in rows:
        alone.update(_pixels(_run(spec, [row], stage)))
    assert together.keys() == alone.keys() == {r["id"] for r in rows}
    for rid in together:
        assert np.abs(together[rid] - alone[rid]).max() <= TOL, rid
    assert np.abs(together["plain-32"] - together["square-32"]).max() > TOL


def test_bad_inputs_reject_only_their_rows_with_a_reason(tiny_sd, tiny_controlnet, inputs, tmp_path):
    spec = _spec(tiny_sd, tiny_controlnet)
    rows = [
        {"id": "ok", "prompt": "a cat", "control_image": inputs["noise"]},
        {"id": "missing", "prompt": "a cat", "control_image": inputs["missing"]},
        {"id": "corrupt", "prompt": "a cat", "control_image": inputs["corrupt"]},
        {"id": "empty", "prompt": "a cat", "control_image": ""},
        {"id": "odd-size", "prompt": "a cat", "control_image": inputs["noise"], "width": 36},
        {"id": "ok-img2img", "prompt": "a cat", "control_image": inputs["square"], "init_image": inputs["init"]},
    ]
    out = _run(spec, rows)
    status = dict(zip(out.column("id").to_pylist(), out.column("status").to_pylist()))
    error = dict(zip(out.column("id").to_pylist(), out.column("error").to_pylist()))
    assert status == {"ok": None, "missing": "rejected", "corrupt": "rejected", "empty": "rejected",
                      "odd-size": "rejected", "ok-img2img": None}  # fmt: skip
    assert error["missing"] == f"control_image: cannot read {inputs['missing']} (not found)"
    assert error["corrupt"].startswith(f"control_image: cannot decode {inputs['corrupt']} (")
    assert error["empty"] == "control_image: empty, but ControlNet 'edges' needs an image for every row"
    assert error["odd-size"].startswith("width, height: 36x32 is not divisible by 8")

    record = {r["id"]: r for r in out.to_pylist()}
    noise_sha = hashlib.sha256(Path(inputs["noise"]).read_bytes()).hexdigest()
    assert record["ok"]["control_image_uris"] == [inputs["noise"]]
    assert record["ok"]["control_image_sha256"] == [noise_sha]
    assert record["ok"]["pipeline_class"] == "StableDiffusionControlNetPipeline" and record["ok"]["cfg"] is True
    assert record["ok"]["strength"] is None
    assert record["ok-img2img"]["pipeline_class"] == "StableDiffusionControlNetImg2ImgPipeline"
    assert record["ok-img2img"]["init_image_sha256"] == hashlib.sha256(Path(inputs["init"]).read_bytes()).hexdigest()
    assert record["ok-img2img"]["strength"] == spec.sampler.strength

    index = WriteStage(spec, str(tmp_path), "unit")(out)
    assert index.schema.field("control_image_uris").type == INDEX_SCHEMA.field("control_image_uris").type
    written = dict(zip(index.column("id").to_pylist(), index.column("status").to_pylist()))
    assert written == {**status, "ok": "written", "ok-img2img": "written"}


def test_guidance_rescale_is_per_row_and_refused_where_the_pipeline_lacks_it(optional_stage, inputs):
    spec, stage = optional_stage
    # A strong guidance, where rescaling has something to rescale.
    common = {"prompt": "a cat", "seed": 3, "guidance_scale": 7.5}
    rows = [
        {"id": "plain", **common, "control_image": None},
        {"id": "rescaled", **common, "control_image": None, "guidance_rescale": 1.0},
        {"id": "controlled", **common, "control_image": inputs["noise"], "guidance_rescale": 1.0},
    ]
    out = _run(spec, rows, stage)
    assert out.column("guidance_rescale").to_pylist() == [0.0, 1.0, 1.0]
    assert out.column("status").to_pylist() == [None, None, "rejected"]
    assert out.column("error")[2].as_py() == (
        "guidance_rescale: StableDiffusionControlNetPipeline does not support it; set it to 0 for this row"
    )
    images = _pixels(out)
    assert np.abs(images["plain"] - images["rescaled"]).max() > TOL


def test_inpainting_with_a_mask_and_per_row_strength(optional_stage, inputs):
    spec, stage = optional_stage
    rows = [
        {"id": "weak", "prompt": "a cat", "seed": 3, "init_image": inputs["init"], "strength": 0.5},
        {"id": "strong", "prompt": "a cat", "seed": 3, "init_image": inputs["init"], "strength": 1.0},
        {"id": "inpaint", "prompt": "a cat", "seed": 3, "init_image": inputs["init"], "mask_image": inputs["mask"]},
        {"id": "no-steps", "prompt": "a cat", "seed": 3, "init_image": inputs["init"], "strength": 0.3},
    ]
    out = _run(spec, rows, stage)
    record = {r["id"]: r for r in out.to_pylist()}
    assert [record[i]["status"] for i in ("weak", "strong", "inpaint", "no-steps")] == [None, None, None, "rejected"]
    assert record["no-steps"]["error"] == "strength: 0.3 of 2 steps leaves no denoising step; raise steps or strength"
    assert record["inpaint"]["pipeline_class"] == "StableDiffusionInpaintPipeline"
    assert record["inpaint"]["mask_image_sha256"] == hashlib.sha256(Path(inputs["mask"]).read_bytes()).hexdigest()
    assert [record[i]["strength"] for i in ("weak", "strong", "inpaint")] == [0.5, 1.0, spec.sampler.strength]
    images = _pixels(out)
    assert np.abs(images["weak"] - images["strong"]).max() > TOL


def test_the_stage_reads_the_control_columns_its_controlnets_require(tiny_sd, tiny_controlnet):
    assert "control_image" in GenerateStage(_spec(tiny_sd, tiny_controlnet)).reads
    assert "control_image" not in GenerateStage(_spec(tiny_sd, tiny_controlnet, required=False)).reads


def test_a_prompt_past_the_text_encoders_limit_is_recorded_as_truncated(optional_stage, tmp_path, caplog):
    spec, stage = optional_stage
    # The tiny CLIP tokenizer has one token per byte: 75 bytes and the start/end tokens fill its 77.
    rows = [
        {"id": "short", "prompt": "a cat", "seed": 3, "control_image": None},
        {"id": "fits", "prompt": "x" * 75, "seed": 3, "control_image": None},
        {"id": "cut", "prompt": "x" * 76, "seed": 3, "control_image": None},
        {"id": "shorter", "prompt": "x" * 74, "seed": 3, "control_image": None},
        {"id": "long", "prompt": "a cat on a mat " * 20, "seed": 3, "control_image": None},
    ]
    with caplog.at_level(logging.WARNING, logger="diffgen"):
        out = _run(spec, rows, stage)
    record = {r["id"]: r for r in out.to_pylist()}
    assert {i: r["prompt_truncated"] for i, r in record.items()} == {
        "short": False, "fits": False, "cut": True, "shorter": False, "long": True
    }  # fmt: skip
    assert record["cut"]["prompt_truncation"] == "tokenizer: 78 > 77 tokens"
    assert record["long"]["prompt_truncation"] == "tokenizer: 202 > 77 tokens"
    assert record["short"]["prompt_truncation"] is None and record["fits"]["prompt_truncation"] is None
    assert "2 of 5 prompt(s) in this batch exceed a text encoder's token limit" in caplog.text
    assert out.column("status").to_pylist() == [None] * 5  # truncated prompts still make their images

    index = WriteStage(spec, str(tmp_path), "unit")(out)
    assert dict(zip(index.column("id").to_pylist(), index.column("prompt_truncated").to_pylist())) == {
        "short": False, "fits": False, "cut": True, "shorter": False, "long": True
    }  # fmt: skip
    assert index.schema.field("prompt_truncated").type == INDEX_SCHEMA.field("prompt_truncated").type


@pytest.mark.parametrize(
    ("cores", "actors", "threads"),
    [(2, 1, 1), (2, 2, 1), (1, 1, 1), (4, 1, 3), (16, 1, 15), (16, 4, 3), (16, 16, 1), (3, 8, 1)],
)
def test_cpu_actors_leave_a_core_of_their_share_to_the_other_stages(cores, actors, threads):
    assert default_cpu_threads(actors, cores) == threads


def _few_step_spec(model, scheduler: str, loras: list | None = None, **sampler) -> JobSpec:
    return JobSpec.model_validate(
        {
            "run_id": "unit",
            "model": {"id": str(model)},
            "sampler": {"steps": 4, "guidance_scale": 3.0, "width": 32, "height": 32, "scheduler": scheduler}
            | sampler,
            "provenance": {"allow_unwatermarked": True},
            "loras": loras or [],
        }
    )


def _one_image(spec: JobSpec) -> tuple[dict, np.ndarray]:
    out = _run(spec, [{"id": "a", "prompt": "a red square", "seed": 3}])
    row = out.to_pylist()[0]
    assert row["status"] is None, row["error"]
    return row, _pixels(out)["a"]


def test_lcm_and_tcd_sample_an_lcm_distilled_model_with_its_guidance_embedding(tiny_lcm):
    row, own = _one_image(_few_step_spec(tiny_lcm, "default"))
    assert row["cfg"] is False  # time_cond_proj_dim: guidance is an embedding, no unconditional pass
    _, lcm = _one_image(_few_step_spec(tiny_lcm, "lcm"))
    _, tcd = _one_image(_few_step_spec(tiny_lcm, "tcd"))
    _, euler = _one_image(_few_step_spec(tiny_lcm, "euler"))
    _, other_guidance = _one_image(_few_step_spec(tiny_lcm, "lcm", guidance_scale=8.0))
    assert np.abs(lcm - own).max() <= TOL  # the folder's own scheduler is LCM
    assert np.abs(tcd - lcm).max() > 10 and np.abs(euler - lcm).max() > 10
    assert np.abs(other_guidance - lcm).max() > 10  # the embedding carries guidance into the UNet


def test_scheduler_options_change_the_image_and_more_steps_than_distilled_are_rejected(tiny_lcm):
    _, lcm = _one_image(_few_step_spec(tiny_lcm, "lcm"))
    _, fewer = _one_image(_few_step_spec(tiny_lcm, "lcm", scheduler_options={"original_inference_steps": 5}))
    assert np.abs(fewer - lcm).max() > 10
    spec = _few_step_spec(tiny_lcm, "lcm")
    out = _run(spec, [{"id": "many", "prompt": "x", "steps": 60}]).to_pylist()[0]
    assert out["status"] == "rejected"
    assert out["error"].startswith("steps: 60 refused by LCMScheduler: ") and "original_steps" in out["error"]


def test_an_lcm_lora_runs_on_a_base_model_with_the_lcm_scheduler(tiny_sd, tiny_lora):
    lora = [{"path": str(tiny_lora), "name": "lcm_lora"}]
    row, with_lora = _one_image(_few_step_spec(tiny_sd, "lcm", guidance_scale=1.0, loras=lora))
    _, without = _one_image(_few_step_spec(tiny_sd, "lcm", guidance_scale=1.0))
    assert row["cfg"] is False and np.abs(with_lora - without).max() > 10


def test_the_index_and_provenance_record_the_scheduler_options(tiny_lcm, tmp_path):
    from diffgen.provenance.png import decode_png
    from diffgen.provenance.record import PROVENANCE_KEY

    options = {"original_inference_steps": 8}
    spec = _few_step_spec(tiny_lcm, "lcm", scheduler_options=options).model_copy(
        update={"provenance": ProvenanceSpec(watermark=False)}
    )
    generated = _run(spec, [{"id": "a", "prompt": "a red square", "seed": 3}])
    index = WriteStage(spec, str(tmp_path), "unit")(generated).to_pylist()[0]
    assert index["scheduler"] == "lcm" and json.loads(index["scheduler_options"]) == options
    record = json.loads(decode_png(Path(index["image_uri"]).read_bytes())[1][PROVENANCE_KEY])
    assert record["scheduler"] == "lcm" and record["scheduler_options"] == options
