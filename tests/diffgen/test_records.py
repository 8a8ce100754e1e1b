import pyarrow as pa

from diffgen.records import derived_seed, expand, image_seed, record_id
from schemas.job import JobSpec

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
