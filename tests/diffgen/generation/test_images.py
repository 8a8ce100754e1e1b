"""Reading input images by URI: decoded pixels and sha256, or a one-line reason."""

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from diffgen.generation.images import ImageInputError, InputLimits, read_image


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
    monkeypatch.setattr("diffgen.generation.images.MAX_PIXELS", 50)
    (tmp_path / "big.png").write_bytes(_png())
    with pytest.raises(ImageInputError, match=r"cannot decode .*big.png \(10x6 exceeds 50 pixels\)"):
        read_image(str(tmp_path / "big.png"))


# Limits and confinement: nothing is read before it is known to be a regular file of bounded size
# from an allowed place, and a read that stalls costs its row only.


def test_a_fifo_or_a_device_is_refused_without_blocking(tmp_path):
    import os
    import time

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    for uri in (str(fifo), "/dev/zero"):
        with pytest.raises(ImageInputError, match=r"not a regular file \(other\)") as err:
            read_image(uri, limits=InputLimits(timeout_s=5))
        assert not err.value.transient
    assert time.monotonic() - started < 2


def test_an_input_above_max_input_bytes_is_refused_by_its_size(tmp_path):
    (tmp_path / "a.png").write_bytes(_png())
    size = (tmp_path / "a.png").stat().st_size
    with pytest.raises(ImageInputError, match=rf"{size} bytes is above policy.max_input_bytes={size - 1}"):
        read_image(str(tmp_path / "a.png"), limits=InputLimits(max_bytes=size - 1))
    assert read_image(str(tmp_path / "a.png"), limits=InputLimits(max_bytes=size)).image.size == (10, 6)


def test_a_file_that_states_no_size_is_cut_at_the_limit():
    with pytest.raises(ImageInputError, match=r"more than policy.max_input_bytes=16 bytes"):
        read_image("/proc/self/status", limits=InputLimits(max_bytes=16))


def test_input_roots_confine_reads_after_resolving_dot_dot_and_links(tmp_path):
    allowed = tmp_path / "inputs"
    allowed.mkdir()
    (allowed / "a.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    (allowed / "link.png").symlink_to(tmp_path / "secret.png")
    limits = InputLimits(roots=(str(allowed),))
    assert read_image(str(allowed / "a.png"), limits=limits).image.size == (10, 6)
    for uri in (str(allowed / ".." / "secret.png"), str(allowed / "link.png"), "/etc/passwd"):
        with pytest.raises(ImageInputError, match="is outside policy.input_roots"):
            read_image(uri, limits=limits)


def test_server_errors_and_stalls_are_transient_missing_files_are_not(http_server):
    assert read_image(f"{http_server}/ok.png").image.size == (10, 6)
    with pytest.raises(ImageInputError) as down:
        read_image(f"{http_server}/down.png")
    assert down.value.transient
    with pytest.raises(ImageInputError, match="no answer within policy.input_timeout_s=0.5 s") as slow:
        read_image(f"{http_server}/slow.png", limits=InputLimits(timeout_s=0.5))
    assert slow.value.transient
    with pytest.raises(ImageInputError, match=r"\(not found\)") as missing:
        read_image(f"{http_server}/missing.png")
    assert not missing.value.transient


def test_a_refused_connection_is_transient():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ImageInputError, match="cannot read") as err:
        read_image(f"http://127.0.0.1:{port}/a.png", limits=InputLimits(timeout_s=10))
    assert err.value.transient
