"""IP-Adapter image prompts through the generate stage with a tiny adapter and CLIP vision encoder: the image
prompt steers the image, scale 0 (or an optional adapter without an image) is the plain pipeline, and the
index and provenance say what ran."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from diffgen.dataset.records import ManifestError, expand
from diffgen.generation.loading import ModelLoadError, preflight
from diffgen.provenance.png import decode_png
from diffgen.provenance.record import PROVENANCE_KEY, file_sha256
from diffgen.schemas.job import JobSpec
from diffgen.stages.generate import GenerateStage
from diffgen.stages.write import WriteStage

TOL = 2


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("image-prompts")
    rng = np.random.default_rng(0)
    noise = Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8))
    red = Image.new("RGB", (40, 40), (255, 0, 0))
    noise.save(folder / "noise.png")
    red.save(folder / "red.png")
    return {"noise": str(folder / "noise.png"), "red": str(folder / "red.png")}


def _spec(model, adapter: Path | None, scale: float = 1.0, required: bool = True, scheduler: str = "euler") -> JobSpec:
    adapters = [{"weights": str(adapter / "ip-adapter.safetensors"), "image_encoder": str(adapter / "image_encoder"),
                 "scale": scale, "required": required}] if adapter else []  # fmt: skip
    return JobSpec.model_validate(
        {
            "run_id": "unit",
            "model": {"id": str(model)},
            "sampler": {"scheduler": scheduler, "steps": 3, "guidance_scale": 3.0, "width": 32, "height": 32},
            "ip_adapters": adapters,
            "provenance": {"watermark": False},
            "compute": {"batch_size": 4},
        }
    )


def _run(spec: JobSpec, images: list[str | None]) -> tuple[pa.Table, list[np.ndarray | None]]:
    n = len(images)
    columns = {"id": [f"r{i}" for i in range(n)], "prompt": ["a cat"] * n, "seed": [5] * n}
    if spec.ip_adapters:
        columns["ip_adapter_image"] = images
    out = GenerateStage(spec)(expand(pa.table(columns), spec))
    pixels = [None if p is None else np.frombuffer(p, np.uint8).reshape(32, 32, 3).astype(int)
              for p in out.column("pixels").to_pylist()]  # fmt: skip
    return out, pixels


def test_the_image_prompt_steers_the_image_and_scale_0_is_the_plain_pipeline(tiny_sd, tiny_ip_adapter, prompts):
    _, (plain,) = _run(_spec(tiny_sd, None), [None])
    # One batch, two image prompts: each row's own image, as if it ran alone.
    out, (noise, red) = _run(_spec(tiny_sd, tiny_ip_adapter), [prompts["noise"], prompts["red"]])
    _, (alone,) = _run(_spec(tiny_sd, tiny_ip_adapter), [prompts["red"]])
    _, (off,) = _run(_spec(tiny_sd, tiny_ip_adapter, scale=0.0), [prompts["noise"]])
    assert np.abs(noise - plain).max() > 10 and np.abs(noise - red).max() > 10
    assert np.abs(red - alone).max() <= TOL
    assert np.abs(off - plain).max() <= TOL
    assert out.column("ip_adapter_image_sha256").to_pylist()[1] == file_sha256(prompts["red"])


def test_an_empty_cell_runs_an_optional_adapter_at_scale_0_and_rejects_for_a_required_one(
    tiny_sd, tiny_ip_adapter, prompts
):
    _, (plain,) = _run(_spec(tiny_sd, None), [None])
    _, (without, with_image) = _run(_spec(tiny_sd, tiny_ip_adapter, required=False), [None, prompts["noise"]])
    assert np.abs(without - plain).max() <= TOL and np.abs(with_image - plain).max() > 10
    out, _ = _run(_spec(tiny_sd, tiny_ip_adapter), [None])
    assert out.column("status").to_pylist() == ["rejected"]
    assert out.column("error").to_pylist()[0].startswith("ip_adapter_image: empty, but ip_adapters.0 needs an image")


def test_the_index_and_provenance_record_the_adapter_and_the_image(tiny_sd, tiny_ip_adapter, prompts, tmp_path):
    spec = _spec(tiny_sd, tiny_ip_adapter, scale=0.7)
    generated, _ = _run(spec, [prompts["red"]])
    row = WriteStage(spec, str(tmp_path / "out"), "unit")(generated).to_pylist()[0]
    (adapter,) = row["ip_adapters"]
    assert adapter["scale"] == 0.7 and adapter["sha256"] == file_sha256(str(tiny_ip_adapter / "ip-adapter.safetensors"))
    assert row["ip_adapter_image"] == prompts["red"] and row["ip_adapter_image_sha256"] == file_sha256(prompts["red"])
    record = json.loads(decode_png(Path(row["image_uri"]).read_bytes())[1][PROVENANCE_KEY])
    assert record["ip_adapters"] == [adapter]
    assert record["ip_adapter_image_uri"] == prompts["red"]
    assert record["ip_adapter_image_sha256"] == file_sha256(prompts["red"])


def test_what_cannot_run_is_refused_before_any_weights_load(tiny_sd, tiny_ip_adapter, tiny_family, tmp_path):
    missing = tmp_path / "none"
    with pytest.raises(ModelLoadError, match=r"^ip_adapters.0.weights: .*ip-adapter.safetensors is not a file$"):
        preflight(_spec(tiny_sd, missing))
    flux, _ = tiny_family("flux")
    with pytest.raises(ModelLoadError, match=r"^ip_adapters: a flux model is not supported"):
        preflight(_spec(flux, tiny_ip_adapter, scheduler="default"))
    with pytest.raises(ManifestError, match=r"column 'ip_adapter_image' but the job spec has no ip_adapters"):
        expand(pa.table({"id": ["a"], "prompt": ["x"], "ip_adapter_image": ["a.png"]}), _spec(tiny_sd, None))
    with pytest.raises(ManifestError, match=r"ip_adapters.0 needs a column 'ip_adapter_image'"):
        expand(pa.table({"id": ["a"], "prompt": ["x"]}), _spec(tiny_sd, tiny_ip_adapter))


def test_an_image_prompt_combines_with_img2img(tiny_sd, tiny_ip_adapter, prompts):
    spec = _spec(tiny_sd, tiny_ip_adapter, required=False)
    rows = {"id": ["plain", "prompted"], "prompt": ["a cat"] * 2, "seed": [5] * 2,
            "init_image": [prompts["noise"]] * 2, "strength": [0.8] * 2, "ip_adapter_image": [None, prompts["red"]]}
    out = GenerateStage(spec)(expand(pa.table(rows), spec))
    assert out.column("status").to_pylist() == [None, None], out.column("error").to_pylist()
    assert set(out.column("pipeline_class").to_pylist()) == {"StableDiffusionImg2ImgPipeline"}
    plain, prompted = (np.frombuffer(p, np.uint8).astype(int) for p in out.column("pixels").to_pylist())
    assert np.abs(plain - prompted).max() > 10
