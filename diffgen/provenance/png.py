"""PNG encoding with text chunks."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin


def encode_png(pixels: np.ndarray, text: dict[str, str] | None = None, compress_level: int = 6) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG, with `text` as iTXt chunks (UTF-8 safe), at zlib
    `compress_level` (0 stored .. 9 smallest; the pixels are the same at every level)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """The pixels and text chunks of a PNG."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.format != "PNG":
            raise ValueError(f"not a PNG (format {image.format})")
        text = dict(getattr(image, "text", {}))
        return np.asarray(image.convert("RGB")), text
