"""Resume only over identical inputs: a changed job or manifest is refused, or made again on request."""

import json

import numpy as np
import pytest
from PIL import Image

from diffgen.dataset import storage
from diffgen.dataset.resume import ChangedRecordsError
from diffgen.pipelines.generate import run
from diffgen.pipelines.plan import plan
from diffgen.provenance.png import decode_png
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest

ROWS = [
    {"id": "cat-1", "prompt": "a cat", "num_images": 2, "seed": 11},
    {"id": "dog-1", "prompt": "a dog", "num_images": 1, "seed": 5},
]


def _spec(tmp_path, tiny_sd, rows, out, name="m.parquet", overrides=(), **sections):
    manifest = write_manifest(tmp_path / name, rows)
    job = write_job(tmp_path / "job.yaml", tiny_sd, **sections)
    return load_job_spec(job, manifest=str(manifest), output=str(out), overrides=list(overrides))


@pytest.fixture
def made(ray_cluster, tmp_path, tiny_sd):
    out = tmp_path / "out"
    summary = run(_spec(tmp_path, tiny_sd, ROWS, out))
    assert summary.status == "complete"
    return out


def test_a_changed_prompt_is_refused_naming_the_count_and_the_field(made, tmp_path, tiny_sd):
    rows = [dict(ROWS[0], prompt="a lion"), ROWS[1]]
    with pytest.raises(ChangedRecordsError) as err:
        plan(_spec(tmp_path, tiny_sd, rows, made, name="m2.parquet"))
    message = str(err.value)
    assert "2 of 3 committed record(s)" in message
    assert "prompt was 'a cat', now 'a lion'" in message and "--overwrite-changed" in message


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"sampler": {"steps": 3}}, "steps was 4, now 3"),
        ({"seed": 8, "sampler": {"negative_prompt": "blurry"}}, "negative_prompt was '', now 'blurry'"),
        ({"sampler": {"scheduler": "ddim"}}, "scheduler was 'euler', now 'ddim'"),
        ({"sampler": {"scheduler_options": {"timestep_spacing": "trailing"}}},
         "scheduler_options was {}, now {'timestep_spacing': 'trailing'}"),
    ],
)
def test_a_changed_job_setting_is_refused(made, tmp_path, tiny_sd, sections, field):
    with pytest.raises(ChangedRecordsError) as err:
        plan(_spec(tmp_path, tiny_sd, ROWS, made, **sections))
    assert "3 of 3 committed record(s)" in str(err.value) and field in str(err.value)


def test_a_new_lora_is_refused_and_unchanged_inputs_are_not(made, tmp_path, tiny_sd, tiny_lora):
    lora = tiny_lora
    with pytest.raises(ChangedRecordsError) as err:
        plan(_spec(tmp_path, tiny_sd, ROWS, made, loras=[{"path": str(lora), "weight": 0.5}]))
    assert "loras was [], now [('style', 0.5, '" in str(err.value)
    # Re-ordering the manifest or changing compute settings changes no image: nothing to do.
    p = plan(_spec(tmp_path, tiny_sd, ROWS[::-1], made, name="m3.parquet", compute={"batch_size": 3}))
    assert (p.todo.num_rows, p.changed) == (0, 0)


def test_overwrite_changed_makes_them_again_and_the_index_says_what_made_them(made, tmp_path, tiny_sd):
    before = {p.name: p.read_bytes() for p in made.rglob("*.png")}
    rows = [dict(ROWS[0], prompt="a lion"), ROWS[1]]
    spec = _spec(tmp_path, tiny_sd, rows, made, name="m2.parquet", overrides=["policy.changed_records=overwrite"])
    assert plan(spec).describe()["changed_records"] == 2
    summary = run(spec)
    c = summary.counts
    assert (summary.status, c.images_expected, c.images_written) == ("complete", 3, 3)
    index = {(r["id"], r["sample_index"]): r for r in storage.read_parquet_folder(str(made / "index")).to_pylist()}
    assert len(index) == 3
    assert [index[("cat-1", k)]["prompt"] for k in (0, 1)] == ["a lion", "a lion"]
    for row in index.values():
        png = storage.read_bytes(row["image_uri"])
        provenance = json.loads(decode_png(png)[1]["diffgen:provenance"])
        assert provenance["prompt"] == row["prompt"]
    after = {p.name: p.read_bytes() for p in made.rglob("*.png")}
    changed = {name for name in before if before[name] != after[name]}
    assert len(changed) == 2 and after.keys() == before.keys()
    # The same job again: nothing left to do.
    assert plan(spec).todo.num_rows == 0


def test_an_init_image_replaced_at_the_same_uri_is_a_change(ray_cluster, tmp_path, tiny_sd):
    init = tmp_path / "init.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(init)
    rows = [{"id": "v-1", "prompt": "a cat", "seed": 3, "init_image": str(init)}]
    out = tmp_path / "out"
    assert run(_spec(tmp_path, tiny_sd, rows, out)).status == "complete"
    assert plan(_spec(tmp_path, tiny_sd, rows, out)).todo.num_rows == 0
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(init)
    with pytest.raises(ChangedRecordsError) as err:
        plan(_spec(tmp_path, tiny_sd, rows, out))
    assert "1 of 1 committed record(s)" in str(err.value) and "init_image content sha256 was '" in str(err.value)
