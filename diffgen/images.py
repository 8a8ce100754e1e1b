"""Reading input images (init, mask, control) from any fsspec URI, with their sha256.

A missing, unreadable or corrupt image is a per-row problem: `read_image` raises
`ImageInputError` with a one-line reason and the caller rejects only that row.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from diffgen import storage

# Larger inputs are almost surely a mistake (or a decompression bomb); PIL's own limit is ~179 Mpx.
MAX_PIXELS = 64 * 1024 * 1024


class ImageInputError(ValueError):
    """An input image that cannot be used; the message is the reason, fit for an `error` column."""


@dataclass(frozen=True, eq=False)
class InputImage:
    uri: str
    sha256: str
    image: Image.Image


def decode_image(data: bytes, mode: str) -> Image.Image:
    """Decode PNG/JPEG/WebP/... bytes fully into a PIL image of `mode` ("RGB" or "L")."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageInputError(f"{image.width}x{image.height} exceeds {MAX_PIXELS} pixels")
            # Alpha is dropped onto black rather than composited: control maps and masks carry no transparency.
            return image.convert(mode)


def read_image(uri: str, mode: str = "RGB") -> InputImage:
    """The decoded image at `uri` and the sha256 of its bytes; `ImageInputError` says why not."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ImageInputError(f"cannot read {uri} (not found)") from None
    except Exception as e:  # fsspec backends raise their own types for permissions, timeouts, bad buckets
        raise ImageInputError(f"cannot read {uri} ({type(e).__name__}: {e})"[:500]) from None
    try:
        image = decode_image(data, mode)
    except ImageInputError as e:
        raise ImageInputError(f"cannot decode {uri} ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Warning) as e:
        raise ImageInputError(f"cannot decode {uri} ({type(e).__name__}: {e})"[:500]) from None
    return InputImage(uri, hashlib.sha256(data).hexdigest(), image)
