"""The Merkle root a proof commits the withdrawn samples to (RFC 6962 §2.1, SHA-256).

Leaves are the samples' SHA-256 content hashes: lowercase hex, duplicates dropped, sorted
ascending, each leaf's data the 32 raw bytes of the hash. Leaf hash = SHA-256(0x00 || data); node
hash = SHA-256(0x01 || left || right); for n > 1 leaves the tree splits at k, the largest power of
two below n (so an odd leaf is never duplicated); no leaves: SHA-256 of the empty string. A seller
holding her samples' hashes recomputes the root with `merkle_root` (or any RFC 6962 library) and
compares it to the signed one, without the proof naming a single sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

CONSTRUCTION = "rfc6962-sha256(sorted unique sample sha256 bytes)"


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaves(sha256s: Iterable[str]) -> list[bytes]:
    """The leaf data, in tree order: the hashes' bytes, unique, sorted by their hex."""
    return [bytes.fromhex(h) for h in sorted({h.lower() for h in sha256s})]


def _root(data: Sequence[bytes]) -> bytes:
    n = len(data)
    if n == 1:
        return _leaf(data[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return _node(_root(data[:k]), _root(data[k:]))


def merkle_root(sha256s: Iterable[str]) -> str:
    """The root, as lowercase hex."""
    data = leaves(sha256s)
    if not data:
        return hashlib.sha256(b"").hexdigest()
    return _root(data).hex()
