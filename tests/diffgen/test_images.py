"""Reading input images by URI: decoded pixels and sha256, or a one-line reason."""

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from diffgen.images import ImageInputError, read_image


def _png(mode: str = "RGB", size=(10, 6)) -> bytes:
    sink = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (255, 0, 0)).save(sink, format="PNG")
    return sink.getvalue()


def test_a_good_image_decodes_with_the_sha256_of_its_bytes(tmp_path):
    data = _png("RGBA")
    (tmp_path / "a.png").write_bytes(data)
    got = read_image(str(tmp_path / "a.png"))
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.image.mode == "RGB" and got.image.size == (10, 6)
    assert np.asarray(got.image)[0, 0].tolist() == [255, 0, 0]
    assert read_image(f"file://{tmp_path / 'a.png'}", "L").image.mode == "L"


def test_missing_and_corrupt_images_give_a_reason(tmp_path):
    with pytest.raises(ImageInputError, match=r"^cannot read .*nope.png \(not found\)$"):
        read_image(str(tmp_path / "nope.png"))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ImageInputError, match=r"^cannot decode .*bad.png \(UnidentifiedImageError"):
        read_image(str(tmp_path / "bad.png"))
    (tmp_path / "cut.png").write_bytes(_png()[:40])
    with pytest.raises(ImageInputError, match=r"^cannot decode .*cut.png \("):
        read_image(str(tmp_path / "cut.png"))


def test_oversized_images_are_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr("diffgen.images.MAX_PIXELS", 50)
    (tmp_path / "big.png").write_bytes(_png())
    with pytest.raises(ImageInputError, match=r"cannot decode .*big.png \(10x6 exceeds 50 pixels\)"):
        read_image(str(tmp_path / "big.png"))
