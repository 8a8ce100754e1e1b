"""Reading input images (init, mask, control) from any fsspec URI, with their sha256.

A missing, unreadable or corrupt image is a per-row problem: `read_image` raises
`ImageInputError` with a one-line reason and the caller rejects only that row.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from diffgen.dataset import storage

# Larger inputs are almost surely a mistake (or a decompression bomb); PIL's own limit is ~179 Mpx.
MAX_PIXELS = 64 * 1024 * 1024


class ImageInputError(ValueError):
    """An input image that cannot be used; the message is the reason, fit for an `error` column.

    `transient`: the store could not be reached or answered with a server error; the row is
    `failed` (tried again on resume) rather than `rejected` (missing, refused or undecodable).
    """

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class InputLimits:
    """What a run reads as an input image: `policy.max_input_bytes`, `input_timeout_s`, `input_roots`."""

    max_bytes: int = 64 * 2**20
    timeout_s: float = 60.0
    roots: tuple[str, ...] | None = None


# Errors that say the input itself is wrong: reading it again cannot help.
_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, storage.InputRefusedError,
              storage.UnsupportedUriError)  # fmt: skip
# Reads run here so that one that hangs (a stalled server) costs its row, not its batch.
_READERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="diffgen-input")


def read_input_bytes(uri: str, limits: InputLimits) -> bytes:
    """The bytes of an input image within `limits`; `ImageInputError` (transient or not) says why not."""
    if limits.roots is not None and not storage.under(uri, list(limits.roots)):
        raise ImageInputError(f"{uri} is outside policy.input_roots")
    future = _READERS.submit(storage.read_bounded, uri, limits.max_bytes)
    try:
        return future.result(timeout=limits.timeout_s)
    except FutureTimeout:
        future.cancel()
        raise ImageInputError(f"cannot read {uri} (no answer within policy.input_timeout_s={limits.timeout_s:g} s)",
                              transient=True) from None  # fmt: skip
    except FileNotFoundError:
        raise ImageInputError(f"cannot read {uri} (not found)") from None
    except _PERMANENT as e:
        raise ImageInputError(f"cannot read {uri} ({type(e).__name__}: {e})"[:500]) from None
    except Exception as e:  # noqa: BLE001 - connection errors, timeouts and 5xx of every fsspec backend
        raise ImageInputError(f"cannot read {uri} ({type(e).__name__}: {e})"[:500], transient=True) from None


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


def read_image(uri: str, mode: str = "RGB", limits: InputLimits = InputLimits()) -> InputImage:
    """The decoded image at `uri` and the sha256 of its bytes; `ImageInputError` says why not."""
    data = read_input_bytes(uri, limits)
    try:
        image = decode_image(data, mode)
    except ImageInputError as e:
        raise ImageInputError(f"cannot decode {uri} ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Warning) as e:
        raise ImageInputError(f"cannot decode {uri} ({type(e).__name__}: {e})"[:500]) from None
    return InputImage(uri, hashlib.sha256(data).hexdigest(), image)
