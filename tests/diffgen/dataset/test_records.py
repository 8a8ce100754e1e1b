import pyarrow as pa
import pytest

from diffgen.dataset.records import derived_seed, expand, image_seed, record_id
from diffgen.schemas.job import JobSpec
from diffgen.schemas.manifest import ManifestError

SPEC = JobSpec.model_validate(
    {"model": {"id": "m"}, "seed": 5, "sampler": {"width": 64, "height": 32, "guidance_scale": 4.0, "steps": 9}}
)


def test_record_ids_are_stable_and_distinct():
    assert record_id("a", 0) == record_id("a", 0)
    assert len({record_id("a", 0), record_id("a", 1), record_id("b", 0)}) == 3
    assert len(record_id("x" * 10_000, 3)) == 24


def test_expand_one_row_per_image_with_effective_values():
    manifest = pa.Table.from_pylist(
        [
            {"id": "a", "prompt": "p", "num_images": 3, "seed": 100, "width": None, "label": "cat"},
            {"id": "b", "prompt": "q", "num_images": 1, "seed": None, "width": 128, "label": "dog"},
        ]
    )
    out = expand(manifest, SPEC)
    rows = out.to_pylist()
    assert [(r["id"], r["sample_index"]) for r in rows] == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert [r["seed"] for r in rows[:3]] == [100, 101, 102]
    assert rows[3]["seed"] == image_seed(derived_seed(5, "b"), 0)
    assert [r["width"] for r in rows] == [64, 64, 64, 128]
    assert {r["height"] for r in rows} == {32}
    assert {r["guidance_scale"] for r in rows} == {4.0}
    assert {r["steps"] for r in rows} == {9}
    assert {r["negative_prompt"] for r in rows} == {""}
    assert [r["label"] for r in rows] == ["cat"] * 3 + ["dog"]
    assert rows[1]["record_id"] == record_id("a", 1)
    assert "num_images" not in out.column_names


def test_derived_seed_depends_on_job_seed_and_id_only():
    assert derived_seed(1, "a") == derived_seed(1, "a")
    assert derived_seed(1, "a") != derived_seed(2, "a")
    assert 0 <= derived_seed(1, "a") < 2**63


def test_expand_fills_guidance_rescale_and_strength_only_where_an_init_image_is():
    spec = JobSpec.model_validate({"model": {"id": "m"}, "sampler": {"guidance_rescale": 0.3, "strength": 0.6}})
    manifest = pa.Table.from_pylist(
        [
            {"id": "a", "prompt": "p", "init_image": None, "strength": None, "guidance_rescale": None},
            {"id": "b", "prompt": "q", "init_image": "i.png", "strength": None, "guidance_rescale": 0.9},
            {"id": "c", "prompt": "q", "init_image": "", "strength": None, "guidance_rescale": None},
            {"id": "d", "prompt": "q", "init_image": "i.png", "strength": 0.2, "guidance_rescale": None},
        ]
    )
    rows = expand(manifest, spec).to_pylist()
    assert [r["guidance_rescale"] for r in rows] == [0.3, 0.9, 0.3, 0.3]
    assert [r["strength"] for r in rows] == [None, 0.6, None, 0.2]
    assert [r["init_image"] for r in rows] == [None, "i.png", None, "i.png"]
    assert [r["mask_image"] for r in rows] == [None] * 4


def test_control_columns_must_match_the_jobs_controlnets():
    one = JobSpec.model_validate({"model": {"id": "m"}, "controlnets": [{"name": "edges", "model": {"id": "c"}}]})
    with pytest.raises(ManifestError, match="ControlNet 'edges' needs a column 'control_image'"):
        expand(pa.Table.from_pylist([{"id": "a", "prompt": "p"}]), one)
    with pytest.raises(
        ManifestError, match=r"column 'control_image_edge' matches no ControlNet .*expected 'control_image'"
    ):
        expand(pa.Table.from_pylist([{"id": "a", "prompt": "p", "control_image": "x", "control_image_edge": "y"}]), one)
    with pytest.raises(
        ManifestError, match="column 'control_image' matches no ControlNet in the job spec .it has none"
    ):
        expand(pa.Table.from_pylist([{"id": "a", "prompt": "p", "control_image": "x"}]), SPEC)
    optional = JobSpec.model_validate(
        {"model": {"id": "m"}, "controlnets": [{"name": "edges", "model": {"id": "c"}, "required": False}]}
    )
    assert expand(pa.Table.from_pylist([{"id": "a", "prompt": "p"}]), optional).num_rows == 1


def test_relative_image_paths_resolve_against_the_manifests_folder():
    spec = JobSpec.model_validate(
        {"model": {"id": "m"}, "manifest": "s3://bucket/sets/m.parquet",
         "controlnets": [{"name": "edges", "model": {"id": "c"}}]}
    )  # fmt: skip
    manifest = pa.Table.from_pylist(
        [
            {
                "id": "a",
                "prompt": "p",
                "init_image": "init/a.png",
                "mask_image": "/abs/m.png",
                "control_image": "c/a.png",
            },
            {"id": "b", "prompt": "p", "init_image": "file:///x/b.png", "mask_image": None, "control_image": ""},
        ]
    )
    rows = expand(manifest, spec).to_pylist()
    assert [r["init_image"] for r in rows] == ["s3://bucket/sets/init/a.png", "file:///x/b.png"]
    assert [r["mask_image"] for r in rows] == ["/abs/m.png", None]
    assert [r["control_image"] for r in rows] == ["s3://bucket/sets/c/a.png", None]
