"""`diffgen validate` on model folders that are wrong only in their weights files: invalid input, exit 2."""

import logging
import shutil

from diffgen.jobs.api import EXIT_INVALID, EXIT_OK
from diffgen.jobs.cli import main
from tests.conftest import write_job, write_manifest


def test_validate_refuses_a_truncated_weights_file_naming_it(tiny_sd, tmp_path, caplog, capsys):
    model = shutil.copytree(tiny_sd, tmp_path / "model")
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "a cat"}])
    job = write_job(tmp_path / "job.yaml", model, manifest=str(manifest), output=str(tmp_path / "out"))
    assert main(["validate", str(job)]) == EXIT_OK
    capsys.readouterr()

    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])
    with caplog.at_level(logging.ERROR):
        assert main(["validate", str(job)]) == EXIT_INVALID
    assert f"model.id: {weights} is truncated: its header describes" in caplog.text
    assert capsys.readouterr().out == ""  # no plan printed
    assert not (tmp_path / "out").exists()


def test_a_folder_that_fails_only_when_an_actor_loads_it_is_invalid_input_naming_it(ray_cluster, tiny_sd, tmp_path):
    """Well-formed weights of the wrong shapes pass every header check; the actor's load error reaches the
    caller as invalid input (exit 2, retrying cannot help) naming the folder, not as a dead actor (exit 1)."""
    import json

    import pytest

    from diffgen.jobs.api import InvalidInputError, run

    model = shutil.copytree(tiny_sd, tmp_path / "model")
    config = json.loads((model / "unet" / "config.json").read_text())
    config["layers_per_block"] += 1
    (model / "unet" / "config.json").write_text(json.dumps(config))
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "a cat"}])
    job = write_job(tmp_path / "job.yaml", model, manifest=str(manifest), output=str(tmp_path / "out"))
    with pytest.raises(InvalidInputError) as err:
        run(job)
    assert err.value.exit_code == EXIT_INVALID
    assert f"model.id: cannot load {model}" in str(err.value) and "expected shape" in str(err.value)
