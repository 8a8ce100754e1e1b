"""Reference statistics from image folders and Parquet at fsspec URIs: caching, reuse and every refusal."""

import io
import logging

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from diffgen.dataset import storage
from diffgen.metrics.backbones import PixelBackbone
from diffgen.metrics.frechet import FeatureStats
from diffgen.metrics.image_checks import phash
from diffgen.metrics.reference import (
    ReferenceSetError,
    hashes_cache_uri,
    load_stats,
    reference_hashes,
    reference_stats,
    stats_cache_uri,
)


class CountingBackbone(PixelBackbone):
    """The real pixels-16 backbone, counting the images it is asked to extract."""

    def __init__(self):
        super().__init__(16)
        self.seen = 0

    def extract(self, images):
        self.seen += len(images)
        return super().extract(images)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _write_folder(uri: str, images: list[np.ndarray]) -> list[str]:
    names = [storage.join(uri, f"img-{i:03d}.png") for i in range(len(images))]
    for name, image in zip(names, images):
        storage.write_bytes(name, _png(image))
    return names


@pytest.fixture
def images(make_images):
    return make_images(10, seed=11, size=(24, 20))


def test_folder_stats_equal_direct_extraction_and_are_cached(tmp_path, images):
    ref = str(tmp_path / "ref")
    _write_folder(ref, images)
    backbone = CountingBackbone()
    stats = reference_stats(ref, backbone, batch_size=3)
    direct = FeatureStats(backbone.name, backbone.resize, backbone.dim).update(PixelBackbone(16).extract(images))
    assert stats.count == 10 and backbone.seen == 10
    np.testing.assert_allclose(stats.covariance, direct.covariance, rtol=0, atol=1e-12)

    cache = tmp_path / "ref" / ".diffgen-fid-stats-pixels-16-pil-bicubic-antialias-16x16.npz"
    assert cache.is_file() and stats_cache_uri(ref, backbone) == str(cache)
    again = reference_stats(ref, backbone)
    assert backbone.seen == 10  # served from the cache, nothing extracted
    np.testing.assert_array_equal(again.outer, stats.outer)
    reference_stats(ref, backbone, refresh=True)
    assert backbone.seen == 20


def test_a_grown_reference_is_recomputed(tmp_path, images):
    ref = str(tmp_path / "ref")
    _write_folder(ref, images[:6])
    backbone = CountingBackbone()
    assert reference_stats(ref, backbone).count == 6
    storage.write_bytes(storage.join(ref, "more.png"), _png(images[6]))
    assert reference_stats(ref, backbone).count == 7
    assert backbone.seen == 13


def test_parquet_reference_file_and_hf_struct_column(tmp_path, images):
    uri = str(tmp_path / "ref.parquet")
    column = pa.array([{"bytes": _png(x), "path": None} for x in images[:5]])
    storage.write_parquet(pa.table({"image": column, "caption": ["c"] * 5}), uri)
    stats = reference_stats(uri, PixelBackbone(16))
    direct = FeatureStats("pixels-16", PixelBackbone(16).resize, 768).update(PixelBackbone(16).extract(images[:5]))
    np.testing.assert_allclose(stats.outer, direct.outer, rtol=0, atol=1e-9)
    assert (tmp_path / ".diffgen-ref.parquet-fid-stats-pixels-16-pil-bicubic-antialias-16x16.npz").is_file()


def test_folder_of_parquet_shards_with_a_named_column(tmp_path, images):
    folder = str(tmp_path / "shards")
    storage.write_parquet(pa.table({"jpg": [_png(x) for x in images[:3]]}), storage.join(folder, "a.parquet"))
    storage.write_parquet(pa.table({"jpg": [_png(x) for x in images[3:7]]}), storage.join(folder, "b.parquet"))
    assert reference_stats(folder, PixelBackbone(16), image_column="jpg").count == 7
    with pytest.raises(ReferenceSetError, match=r"a.parquet has no column 'image' \(columns: jpg\)"):
        reference_stats(folder, PixelBackbone(16), refresh=True)


def test_any_fsspec_uri_and_a_separate_cache(images, tmp_path):
    ref = "memory://diffgen-test-ref/set"
    _write_folder(ref, images[:4])
    cache_dir = str(tmp_path / "cache")
    stats = reference_stats(ref, PixelBackbone(16), cache_uri=cache_dir)
    assert stats.count == 4
    cached = storage.list_files(cache_dir, ".npz")
    assert len(cached) == 1 and "pixels-16" in cached[0]
    assert not [f for f in storage.list_files(ref) if f.endswith(".npz")]
    assert load_stats(cached[0], PixelBackbone(16)).count == 4


def test_unwritable_cache_is_a_warning_not_a_failure(tmp_path, images, caplog, monkeypatch):
    ref = str(tmp_path / "ref")
    _write_folder(ref, images[:3])

    def refuse(uri, data):
        raise PermissionError(f"read-only: {uri}")

    monkeypatch.setattr(storage, "write_bytes", refuse)
    with caplog.at_level(logging.WARNING, logger="diffgen.metrics.reference"):
        assert reference_stats(ref, PixelBackbone(16)).count == 3
    assert "pass a writable cache_uri" in caplog.text


def test_empty_and_missing_references(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ReferenceSetError, match="holds no images"):
        reference_stats(str(tmp_path / "empty"), PixelBackbone(16))
    with pytest.raises(ReferenceSetError, match="holds no images"):
        reference_stats(str(tmp_path / "missing"), PixelBackbone(16))
    with pytest.raises(ReferenceSetError, match="does not exist"):
        reference_stats(str(tmp_path / "missing.parquet"), PixelBackbone(16))
    empty_parquet = str(tmp_path / "none.parquet")
    storage.write_parquet(pa.table({"image": pa.array([], pa.binary())}), empty_parquet)
    with pytest.raises(ReferenceSetError, match="holds no images"):
        reference_stats(empty_parquet, PixelBackbone(16))


def test_unreadable_image_is_named(tmp_path, images):
    ref = str(tmp_path / "ref")
    _write_folder(ref, images[:3])
    storage.write_bytes(storage.join(ref, "img-001.png"), b"\x89PNG truncated")
    with pytest.raises(ReferenceSetError, match=r"reference image .*img-001.png cannot be read"):
        reference_stats(ref, PixelBackbone(16))
    bad = str(tmp_path / "bad.parquet")
    storage.write_parquet(pa.table({"image": [_png(images[0]), b"junk"]}), bad)
    with pytest.raises(ReferenceSetError, match=r"bad.parquet#row=1 cannot be read"):
        reference_stats(bad, PixelBackbone(16))


def test_mixed_sizes_are_refused_with_both_files_named(tmp_path, make_images):
    ref = str(tmp_path / "ref")
    _write_folder(ref, make_images(2, seed=1, size=(24, 20)) + make_images(1, seed=2, size=(30, 20)))
    with pytest.raises(ReferenceSetError, match=r"img-000.png is 20x24 but .*img-002.png is 20x30"):
        reference_stats(ref, PixelBackbone(16))


def test_stats_files_of_another_mode_are_refused(tmp_path, images):
    uri = str(tmp_path / "stats.npz")
    storage.write_bytes(uri, FeatureStats("pixels-8", "pil-bicubic-8x8", 192).update(np.zeros((3, 192))).to_bytes())
    with pytest.raises(ReferenceSetError, match=r"holds backbone/resize/dim \('pixels-8'.*this run extracts \('pixels-16'"):
        load_stats(uri, PixelBackbone(16))
    assert load_stats(uri).count == 3
    storage.write_bytes(uri, b"garbage")
    with pytest.raises(ReferenceSetError, match=r"stats.npz: not a feature statistics file"):
        load_stats(uri)
    with pytest.raises(ReferenceSetError, match="does not exist"):
        load_stats(str(tmp_path / "nope.npz"))


def test_a_damaged_cache_is_recomputed(tmp_path, images):
    ref = str(tmp_path / "ref")
    _write_folder(ref, images[:3])
    backbone = CountingBackbone()
    storage.write_bytes(stats_cache_uri(ref, backbone), b"garbage")
    assert reference_stats(ref, backbone).count == 3 and backbone.seen == 3
    assert load_stats(stats_cache_uri(ref, backbone), backbone).count == 3


def test_reference_hashes_are_phash_of_each_image_and_cached(tmp_path, images):
    folder = str(tmp_path / "ref")
    names = _write_folder(folder, images[:5])
    got_names, hashes = reference_hashes(folder)
    assert sorted(got_names) == sorted(names)
    by_name = dict(zip(got_names, hashes))
    assert [by_name[n] for n in names] == [phash(x) for x in images[:5]]
    cache = hashes_cache_uri(folder)
    assert storage.exists(cache)
    # Served from the cache: a changed cache value comes back as is.
    storage.write_parquet(pa.table({"name": got_names, "phash": pa.array([1] * 5, pa.uint64())}), cache)
    assert reference_hashes(folder)[1] == [1] * 5
    assert reference_hashes(folder, refresh=True)[1] == hashes


def test_caches_beside_a_folder_of_shards_are_not_read_as_shards(tmp_path, images):
    folder = str(tmp_path / "shards")
    storage.write_parquet(pa.table({"image": [_png(x) for x in images[:3]]}), storage.join(folder, "a.parquet"))
    assert len(reference_hashes(folder)[0]) == 3
    assert reference_stats(folder, PixelBackbone(16)).count == 3
    # Both caches now sit in the folder; neither is taken for a shard of images.
    assert len(reference_hashes(folder, refresh=True)[0]) == 3
    assert reference_stats(folder, PixelBackbone(16), refresh=True).count == 3
