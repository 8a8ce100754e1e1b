"""What provenance calls a model: a hub id, or a local folder's stated hub id or own name, never its path."""

import json

from diffgen.generation.model_folder import model_name
from diffgen.schemas.job import ModelSpec


def test_model_name(tmp_path):
    folder = tmp_path / "deep" / "my-model"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert model_name(ModelSpec(id=str(folder))) == "my-model"
    (folder / "model_index.json").write_text(json.dumps({"_name_or_path": "org/sd-finetune"}))
    assert model_name(ModelSpec(id=str(folder))) == "org/sd-finetune"
    (folder / "model_index.json").write_text(json.dumps({"_name_or_path": "/home/someone/models/x"}))
    assert model_name(ModelSpec(id=str(folder))) == "my-model"
    assert model_name(ModelSpec(id="runwayml/stable-diffusion-v1-5")) == "runwayml/stable-diffusion-v1-5"
