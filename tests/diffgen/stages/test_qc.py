"""The QC stage on small Arrow batches of real pixels, scored by a tiny real CLIP."""

from typing import get_args

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from diffgen.dataset import storage
from diffgen.metrics.backbones import BACKBONES
from diffgen.metrics.clip_score import ClipScorer
from diffgen.metrics.frechet import FeatureStats
from diffgen.metrics.reference import ReferenceSetError
from diffgen.provenance.png import encode_png
from diffgen.schemas.qc import FidBackboneName, QcSpec
from diffgen.stages.chain import check_chain
from diffgen.stages.qc import ALL_GROUP, QcStage

SIZE = 32


@pytest.fixture(scope="module")
def scorer(tiny_clip) -> ClipScorer:
    return ClipScorer.load(tiny_clip)


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _batch(images: dict[str, np.ndarray | None], status: dict[str, str] | None = None) -> pa.Table:
    """One row per image, in order; `group` alternates a/b so grouping has two groups."""
    status = status or {}
    rows = [
        {
            "record_id": rid,
            "prompt": f"a picture number {k}",
            "pixels": None if image is None else image.tobytes(),
            "status": status.get(rid),
            "error": "sampler exploded" if status.get(rid) == "failed" else None,
            "width": SIZE,
            "height": SIZE,
            "group": "ab"[k % 2],
        }
        for k, (rid, image) in enumerate(images.items())
    ]
    return pa.Table.from_pylist(rows)


def _stage(**spec) -> QcStage:
    stage = QcStage(QcSpec(enabled=True, **spec))
    stage.setup()
    return stage


def _rows(table: pa.Table) -> dict[str, dict]:
    return {r["record_id"]: r for r in table.to_pylist()}


def test_black_flat_and_duplicate_images_are_rejected_with_their_reason():
    twin = _noise(3)
    batch = _batch({"n0": _noise(0), "black": np.zeros((SIZE, SIZE, 3), np.uint8),
                    "flat": np.full((SIZE, SIZE, 3), 128, np.uint8), "twin1": twin, "twin2": twin.copy(),
                    "n1": _noise(1)})  # fmt: skip
    out = _rows(_stage(fid_group_by="group")(batch))
    assert out["black"]["status"] == "rejected" and out["black"]["error"] == "qc: black"
    assert out["flat"]["status"] == "rejected" and out["flat"]["error"] == "qc: flat"
    assert out["twin2"]["status"] == "rejected" and out["twin2"]["error"] == "qc: duplicate of twin1"
    assert out["twin2"]["qc_reasons"] == [{"reason": "duplicate", "detail": "twin1"}]
    assert out["twin2"]["error"] == "qc: duplicate of twin1"
    for rid in ("n0", "twin1", "n1"):
        assert out[rid]["status"] is None and out[rid]["error"] is None and out[rid]["qc_reasons"] == []
    assert out["twin1"]["phash"] == out["twin2"]["phash"] != out["n0"]["phash"]
    assert out["flat"]["pixel_std"] == 0.0 and out["n0"]["pixel_std"] > 30
    assert out["n0"]["clip_score"] is None  # no CLIP configured


def test_clip_score_matches_the_scorer_and_the_threshold_cuts_both_ways(tiny_clip, scorer):
    images = {f"n{k}": _noise(k) for k in range(4)}
    batch = _batch(images)
    expected = scorer.score(list(images.values()), batch.column("prompt").to_pylist())
    assert expected.min() > 0  # the tiny CLIP spreads scores, so the cuts below are not vacuous
    low = _stage(clip_model=str(tiny_clip), min_clip_score=float(np.floor(expected.min() - 1)))(batch)
    np.testing.assert_allclose(low.column("clip_score").to_numpy(), expected, rtol=1e-6)
    assert low.column("status").to_pylist() == [None] * 4
    assert low.column("clip_truncated").to_pylist() == [False] * 4
    high = _stage(clip_model=str(tiny_clip), min_clip_score=float(np.ceil(expected.max() + 1)))(batch)
    assert high.column("status").to_pylist() == ["rejected"] * 4
    for score, error in zip(expected, high.column("error").to_pylist()):
        assert error == f"qc: clip_score {score:.1f} < {np.ceil(expected.max() + 1):.1f}"


def test_a_clip_fid_backbone_reuses_the_scores_image_embeddings(tiny_clip, scorer):
    images = {f"n{k}": _noise(k) for k in range(5)}
    batch = _batch(images)
    expected = scorer.score(list(images.values()), [f"a picture number {k}" for k in range(5)])
    # The threshold between the two lowest scores: exactly one image is rejected, the others feed FID.
    low = np.sort(expected)[:2]
    stage = _stage(clip_model=str(tiny_clip), fid_backbone="clip", min_clip_score=float(low.mean()))
    calls = []
    embed = stage._scorer.clip.image_embeddings
    stage._scorer.clip.image_embeddings = lambda imgs: calls.append(len(imgs)) or embed(imgs)
    out = stage(batch)
    assert calls == [5]  # one pass over the batch serves both the score and the FID features
    np.testing.assert_allclose(out.column("clip_score").to_numpy(), expected, rtol=1e-6)
    kept = [images[r["record_id"]] for r in out.to_pylist() if r["status"] is None]
    assert len(kept) == 4
    features = scorer.clip.image_embeddings(kept)
    stats = stage.stats[ALL_GROUP]
    assert stats.backbone == scorer.name and stats.count == 4
    np.testing.assert_allclose(stats.total, features.sum(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.outer, features.T @ features, rtol=1e-6, atol=1e-9)


def test_already_rejected_or_failed_rows_pass_through_untouched():
    batch = _batch({"done": np.zeros((SIZE, SIZE, 3), np.uint8), "gone": None, "n0": _noise(0)},
                   status={"done": "rejected", "gone": "failed"})  # fmt: skip
    stage = _stage()
    out = _rows(stage(batch))
    assert out["done"]["status"] == "rejected" and out["done"]["error"] is None
    assert out["gone"]["status"] == "failed" and out["gone"]["error"] == "sampler exploded"
    for rid in ("done", "gone"):
        assert out[rid]["pixel_std"] is None and out[rid]["phash"] is None and out[rid]["qc_reasons"] is None
    assert out["n0"]["qc_reasons"] == []
    assert stage.stats[ALL_GROUP].count == 1


def test_stats_count_the_kept_rows_per_group_and_merge():
    batch = _batch({"n0": _noise(0), "n1": _noise(1), "black": np.zeros((SIZE, SIZE, 3), np.uint8),
                    "n3": _noise(3), "n4": _noise(4)})  # fmt: skip
    # groups alternate a/b: n0 a, n1 b, black a (rejected), n3 b, n4 a
    stage = _stage(fid_group_by="group")
    out = stage(batch)
    kept = [r for r in out.to_pylist() if r["status"] is None]
    counts = {g: sum(r["group"] == g for r in kept) for g in ("a", "b")}
    assert counts == {"a": 2, "b": 2}
    assert {g: s.count for g, s in stage.stats.items()} == {"a": 2, "b": 2, ALL_GROUP: 4}
    assert stage.stats[ALL_GROUP].backbone == "pixels-16" and stage.stats[ALL_GROUP].dim == 768
    other = _stage(fid_group_by="group")
    other(_batch({"m0": _noise(10), "m1": _noise(11)}))
    merged = {g: FeatureStats.from_bytes(s.to_bytes()).merge(other.stats[g]) for g, s in stage.stats.items()}
    assert {g: s.count for g, s in merged.items()} == {"a": 3, "b": 3, ALL_GROUP: 6}


def test_the_chain_check_names_the_group_column():
    stage = QcStage(QcSpec(fid_group_by="style"))
    with pytest.raises(ValueError, match=r"QcStage reads \['style'\]"):
        check_chain(["record_id", "prompt", "pixels", "status", "error", "width", "height"], [stage])


def test_spec_backbones_match_the_table_and_errors_name_the_field():
    assert set(get_args(FidBackboneName)) == set(BACKBONES)
    for bad, field in [
        ({"min_clip_score": 20.0}, "min_clip_score needs clip_model"),
        ({"fid_backbone": "clip"}, "fid_backbone 'clip' needs clip_model"),
        ({"fid_backbone": "inception-v3-pt"}, "needs fid_weights"),
        ({"fid_weights": "w.pth"}, "fid_weights is only read by"),
        ({"clip_model": "m", "min_clip_score": 101.0}, "min_clip_score"),
        ({"fid_backbone": "dino"}, "fid_backbone"),
        ({"phash_distance": 3}, "phash_distance"),
    ]:
        with pytest.raises(ValidationError, match=field):
            QcSpec(**bad)


def test_an_image_copying_a_reference_image_is_rejected_and_reference_stats_are_loaded(tmp_path):
    reference = str(tmp_path / "ref")
    copied = _noise(7)
    for k, image in enumerate([copied, *(_noise(100 + k) for k in range(5))]):
        storage.write_bytes(storage.join(reference, f"ref-{k}.png"), encode_png(image))
    stage = _stage(reference=reference)
    assert stage.reference is not None and stage.reference.count == 6
    assert stage.reference.backbone == "pixels-16"

    rows = _rows(stage(_batch({"copy": copied, "fresh": _noise(8)})))
    assert rows["copy"]["status"] == "rejected"
    assert rows["copy"]["qc_reasons"] == [{"reason": "reference_duplicate",
                                           "detail": storage.join(reference, "ref-0.png")}]  # fmt: skip
    assert rows["fresh"]["status"] is None and rows["fresh"]["qc_reasons"] == []
    # Only the kept image is in the FID statistics.
    assert stage.stats[ALL_GROUP].count == 1


def test_reference_stats_file_of_another_backbone_is_refused(tmp_path, tiny_clip):
    other = FeatureStats("clip:elsewhere", "clip-224", 4).update(np.eye(4))
    path = tmp_path / "ref.npz"
    path.write_bytes(other.to_bytes())
    assert QcStage(QcSpec(enabled=True, reference_stats=str(path))).reference is None
    with pytest.raises(ReferenceSetError, match="recompute the reference statistics"):
        _stage(reference_stats=str(path))


def test_kept_images_feed_seeded_samples_per_group_and_per_label_from_one_embedding(tiny_clip, scorer):
    from diffgen.metrics.reservoir import Reservoir
    from diffgen.schemas.utility import UtilitySpec

    images = {f"n{k}": _noise(k) for k in range(6)}
    images["black"] = np.zeros((SIZE, SIZE, 3), np.uint8)
    utility = UtilitySpec(real="unused", label_column="group", max_per_class=2, seed=4)
    spec = dict(clip_model=str(tiny_clip), fid_backbone="clip", fid_group_by="group", sample_size=2, sample_seed=4,
                utility=utility)
    stage = _stage(**spec)
    stage(_batch(images))
    assert "group" in stage.reads
    kept = [rid for rid in images if rid != "black"]  # a rejected image feeds no sample
    embedded = dict(zip(kept, scorer.clip.image_embeddings([images[r] for r in kept])))
    for label in "ab":
        members = [rid for k, rid in enumerate(images) if "ab"[k % 2] == label and rid != "black"]
        # One bottom-k per label, as a single pass over the same ids and features would keep.
        whole = Reservoir(scorer.clip.name, scorer.clip.resize, scorer.clip.dim, capacity=2, seed=4)
        whole.update(members, np.stack([embedded[r] for r in members]))
        got = stage.label_samples[label]
        assert got.ids.tolist() == whole.ids.tolist() and got.offered == len(members)
        np.testing.assert_allclose(got.features, whole.features, atol=1e-6)
        assert stage.samples[label].ids.tolist() == whole.ids.tolist()  # the FID backbone is that CLIP
    assert len(stage.samples[ALL_GROUP]) == 2 and stage.samples[ALL_GROUP].offered == len(kept)

    off = _stage(clip_model=str(tiny_clip), fid_backbone="clip", fid_group_by="group", sample_size=0)
    off(_batch(images))
    assert off.samples == {} and off.label_samples == {} and off.stats  # FID statistics without samples
