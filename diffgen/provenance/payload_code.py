"""The watermark's channel code: a 64-bit payload, a 24-bit check and a BCH code around both.

A codeword is `payload (64 bits) | check (24 bits) | BCH parity`. The check is the first 24 bits of
sha256 over a domain tag and the payload; the parity is a binary BCH code (Bose, Chaudhuri and
Hocquenghem 1960; e.g. Lin and Costello, "Error Control Coding", 2nd ed., ch. 6), computed and
decoded by the Linux kernel's BCH library through `bchlib`. Decoding is bounded-distance: up to `t`
wrong bits are corrected, more are reported as a failure, and a corrected word whose check does not
match is refused too, so `decode` returns either the exact payload or None.

False positives by construction: a word read from an unmarked image is, for the decoder, random
bits. It is accepted only if it lies within `t` bits of a codeword (probability 2^k V(n, t) / 2^n,
V the Hamming ball's volume; `false_accept_bound` below: 3.3e-11 for BCH(m=8, t=13), 2.5e-44 for
BCH(m=9, t=56)) and its 24 check bits then match (2^-24). The watermark decoder makes at most
`watermark.MAX_DECODE_ATTEMPTS` (12) such attempts per image, so an unmarked image yields a payload
with probability at most 12 x 2^-24 x 3.3e-11 = 2.3e-17, and at most 12 x 2^-24 = 7.2e-7 (< 1e-6)
counting the check alone.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import bchlib
import numpy as np

PAYLOAD_BITS = 64
CHECK_BITS = 24
MESSAGE_BITS = PAYLOAD_BITS + CHECK_BITS


@dataclass(frozen=True)
class Decoded:
    payload: bytes
    corrected: int  # bits the BCH decoder corrected
    correctable: int  # the code's t


class PayloadCode:
    """BCH over GF(2^m) correcting `t` bit errors, shortened to carry `MESSAGE_BITS` message bits."""

    def __init__(self, m: int, t: int):
        self.m, self.t = m, t
        self._bch = bchlib.BCH(t, m=m)
        self.parity_bits = self._bch.ecc_bits
        self.bits = MESSAGE_BITS + self.parity_bits

    def encode(self, payload: bytes) -> np.ndarray:
        """The codeword's bits (uint8 0/1) for an 8-byte payload."""
        message = payload + _check(payload)
        parity = np.unpackbits(np.frombuffer(bytes(self._bch.encode(message)), np.uint8))[: self.parity_bits]
        return np.concatenate([np.unpackbits(np.frombuffer(message, np.uint8)), parity])

    def decode(self, bits: np.ndarray) -> Decoded | None:
        """The payload from a received word (uint8 0/1, `self.bits` long), or None when the word is more
        than `t` bits from every codeword or its check does not match."""
        message = bytearray(np.packbits(bits[:MESSAGE_BITS]).tobytes())
        parity = bytearray(np.packbits(bits[MESSAGE_BITS : self.bits]).tobytes().ljust(self._bch.ecc_bytes, b"\0"))
        corrected = self._bch.decode(message, parity)
        if corrected < 0:
            return None
        self._bch.correct(message, parity)
        payload, check = bytes(message[: PAYLOAD_BITS // 8]), bytes(message[PAYLOAD_BITS // 8 :])
        if check != _check(payload):
            return None
        return Decoded(payload, corrected, self.t)

    def false_accept_bound(self) -> float:
        """The chance that a uniformly random word decodes to some codeword (check not counted)."""
        ball = sum(math.comb(self.bits, i) for i in range(self.t + 1))
        return math.exp(MESSAGE_BITS * math.log(2) + math.log(ball) - self.bits * math.log(2))


def _check(payload: bytes) -> bytes:
    return hashlib.sha256(b"diffgen-watermark-check\x00" + payload).digest()[: CHECK_BITS // 8]
