"""README's "Load the dataset" one-liners, run as written against a real run's output."""

import re

from diffgen.jobs.api import open_output
from diffgen.pipelines.generate import run
from diffgen.schemas.job import load_job_spec
from tests.conftest import REPO, write_job, write_manifest

README_OUTPUT = "out/default"


def _load_the_dataset_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Load the dataset\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_loads_a_real_output(ray_cluster, tmp_path, tiny_sd, monkeypatch):
    rows = [{"id": f"r{i}", "prompt": f"a {shape}", "num_images": 2, "label": shape, "split": split}
            for i, (shape, split) in enumerate([("cat", "train"), ("dog", "train"), ("cow", "validation")])]  # fmt: skip
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    job = write_job(tmp_path / "job.yaml", tiny_sd, sampler={"steps": 2}, qc={"enabled": False},
                    webdataset={"enabled": True, "min_shards": 2, "split_by": "split"})  # fmt: skip
    out = tmp_path / "out" / "default"
    summary = run(load_job_spec(job, manifest=str(manifest), output=str(out)))
    assert summary.counts.images_written == 6

    monkeypatch.chdir(tmp_path)  # the blocks name out/default, relative to where they run
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    blocks = _load_the_dataset_blocks()
    assert len(blocks) == 5 and all(README_OUTPUT in block for block in blocks)
    names: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), names)  # noqa: S102 - the README's own code

    assert sorted(names["ds"]) == ["train", "validation"]
    assert (names["ds"]["train"].num_rows, names["ds"]["validation"].num_rows) == (4, 2)
    assert sorted(names["ds"]["train"]["label"]) == ["cat", "cat", "dog", "dog"]
    assert names["one"]["train"].num_rows == 6 and "image" in names["one"]["train"].features
    assert names["hf_shards"].num_rows == 6 and len(names["shards"]) == 4  # 2 shards for each split value
    assert names["label"] in ("cat", "dog", "cow")
    assert len(names["rows"]) == 6 and not names["rows"]["file_name"].str.startswith("/").any()
    assert len(names["index"]) == 6 and names["index"]["image_path"].notna().all()
    assert sorted(names["counts"]) == [("cat", 2), ("cow", 2), ("dog", 2)]
    assert names["image"].size == (32, 32)

    # The same output, moved: the index is opened where it now is.
    moved = tmp_path / "moved"
    out.rename(moved)
    reopened = open_output(str(moved))
    assert all(uri.startswith(str(moved)) for uri in reopened.written.column("image_uri").to_pylist())
    assert reopened.read_image(reopened.written.column("record_id")[0].as_py()).size == (32, 32)
