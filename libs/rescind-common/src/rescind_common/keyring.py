"""A keyring of AES-256-GCM master keys by id, so that a master key can be rotated.

Every wrapped or sealed value is stored next to the id of the key that made it. New values use the
current key; every key in the ring still opens what it made, until a rotation command has rewrapped
those values under the current key and the operator removes the old one.

A deployment from before key ids has one key (`RESCIND_CONSENT_MASTER_KEY`,
`RESCIND_WORKER_SECRET_KEY`): it is the key with id `v1`, and rows written before key ids existed
say `v1` (the migrations that added the id columns), so nothing is re-encrypted on upgrade.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rescind_common.keyfiles import create_once

# The id of the single key of a deployment from before key ids, and of the development key file.
LEGACY_KEY_ID = "v1"
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
_NONCE = 12


class KeyUnavailable(Exception):
    """A value cannot be opened: its key id is not in the ring, or that key does not open it."""

    def __init__(self, key_id: str, *, wrong_key: bool = False) -> None:
        self.key_id = key_id
        self.wrong_key = wrong_key
        why = "does not open it (a different key under the same id?)" if wrong_key else "is not configured"
        super().__init__(f"sealed under key {key_id!r}, which {why}")


def decode_key(value: str, name: str) -> bytes:
    """A base64 setting holding exactly 32 bytes; the error names the setting, never the value."""
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not base64") from None
    if len(key) != 32:
        raise ValueError(f"{name} must be base64 of 32 bytes, not {len(key)}")
    return key


def check_ring(
    keys: Mapping[str, str], current: str | None, legacy: str | None, names: tuple[str, str, str]
) -> None:
    """Validate a service's key settings (ids, key lengths, the current id) without building the ring.
    `names` are the settings' variable names: the keyring, the current id, the legacy single key."""
    ring_name, current_name, legacy_name = names
    for key_id, value in keys.items():
        if not KEY_ID.match(key_id):
            raise ValueError(f"{ring_name}: key id {key_id!r} must be 1-32 of A-Z a-z 0-9 . _ -")
        decode_key(value, f"{ring_name}[{key_id!r}]")
    if legacy is not None:
        decode_key(legacy, legacy_name)
        if LEGACY_KEY_ID in keys and keys[LEGACY_KEY_ID] != legacy:
            raise ValueError(f"{legacy_name} is key {LEGACY_KEY_ID!r}, which {ring_name} defines differently")
    ids = set(keys) | ({LEGACY_KEY_ID} if legacy is not None else set())
    if current is not None and current not in ids:
        raise ValueError(f"{current_name} {current!r} is not a key of {ring_name} (or {legacy_name})")
    if current is None and len(ids) > 1:
        raise ValueError(f"{current_name} must name the current key when {ring_name} holds several")


class Keyring:
    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"the current key {current!r} is not in the keyring")
        self.current_id = current
        self._keys = dict(keys)
        self._aeads = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @classmethod
    def from_settings(
        cls, keys: Mapping[str, str], current: str | None, legacy: str | None, dev_file: Path
    ) -> Keyring:
        """The ring from settings already checked by `check_ring`. With no key configured at all
        (development) the key file `dev_file`, created once, is key `v1`."""
        ring = {key_id: base64.b64decode(value) for key_id, value in keys.items()}
        if legacy is not None:
            ring[LEGACY_KEY_ID] = base64.b64decode(legacy)
        if not ring:
            ring[LEGACY_KEY_ID] = dev_key(dev_file)
        if current is None:
            current = next(iter(ring)) if len(ring) == 1 else LEGACY_KEY_ID
        return cls(ring, current)

    @property
    def ids(self) -> list[str]:
        return sorted(self._aeads)

    def has(self, key_id: str) -> bool:
        return key_id in self._aeads

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        """(the current key's id, nonce + ciphertext)."""
        nonce = os.urandom(_NONCE)
        return self.current_id, nonce + self._aeads[self.current_id].encrypt(nonce, plaintext, aad)

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        aead = self._aeads.get(key_id)
        if aead is None:
            raise KeyUnavailable(key_id)
        try:
            return aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise KeyUnavailable(key_id, wrong_key=True) from None

    def raw(self, key_id: str) -> bytes | None:
        """The key's bytes (None: not in the ring), for what is derived from a key."""
        return self._keys.get(key_id)


def dev_key(path: Path) -> bytes:
    """A development key file (base64 of 32 random bytes), created once."""
    return base64.b64decode(create_once(path, lambda: base64.b64encode(os.urandom(32))).strip())
