"""Opaque, time-ordered ids: `<prefix>_<26 chars>` (48-bit ms time + 80 random bits, Crockford base32)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    """A new id; ids made later sort after ids made earlier (to the millisecond)."""
    ms = time.time_ns() // 1_000_000
    return f"{prefix}_{_b32(ms, 10)}{_b32(secrets.randbits(80), 16)}"


def new_ids(prefix: str, n: int) -> list[str]:
    """`n` new ids, strictly increasing even within one millisecond."""
    ms = time.time_ns() // 1_000_000
    start = secrets.randbits(79)
    return [f"{prefix}_{_b32(ms, 10)}{_b32(start + i, 16)}" for i in range(n)]
