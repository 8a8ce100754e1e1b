"""Raw PNG chunk access for tests: read chunks as written, and rebuild a PNG with valid CRCs."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, in file order; raises on a broken length or CRC."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG signature")
    found, pos = [], len(SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in {kind!r} chunk")
        found.append((kind, body))
        pos += 12 + length
    return found


def build(parts: list[tuple[bytes, bytes]]) -> bytes:
    out = [SIGNATURE]
    for kind, body in parts:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(out)


def itxt(data: bytes) -> dict[str, dict]:
    """Every iTXt chunk by keyword, with its header fields and (decompressed) UTF-8 text."""
    found = {}
    for kind, body in chunks(data):
        if kind != b"iTXt":
            continue
        keyword, rest = body.split(b"\x00", 1)
        compressed, method, rest = rest[0], rest[1], rest[2:]
        language, rest = rest.split(b"\x00", 1)
        translated, text = rest.split(b"\x00", 1)
        raw = zlib.decompress(text) if compressed else text
        found[keyword.decode("latin-1")] = {
            "compressed": compressed,
            "method": method,
            "language": language.decode("ascii"),
            "translated": translated.decode("utf-8"),
            "text": raw.decode("utf-8"),
        }
    return found


def flip_pixel_byte(data: bytes) -> bytes:
    """The same PNG with one filtered pixel byte changed and every CRC valid: a careful forgery."""
    parts = chunks(data)
    idat = b"".join(body for kind, body in parts if kind == b"IDAT")
    raw = bytearray(zlib.decompress(idat))
    width, height, depth, colour = struct.unpack(">IIBB", dict(parts)[b"IHDR"][:10])
    if (depth, colour) != (8, 2):
        raise ValueError("only 8-bit RGB PNGs")
    stride = 1 + 3 * width  # each scanline starts with a filter-type byte, which must stay valid
    raw[(height // 2) * stride + 1 + 3 * (width // 2)] ^= 0x40
    out, done = [], False
    for kind, body in parts:
        if kind == b"IDAT":
            if not done:
                out.append((kind, zlib.compress(bytes(raw))))
                done = True
            continue
        out.append((kind, body))
    return build(out)
