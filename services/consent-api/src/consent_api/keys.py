"""Key material: the master key that wraps per-subject keys, and sealing with AES-256-GCM.

Crypto-shredding: every piece of a subject's personal data is sealed under that
subject's own key; erasure deletes the key, and the ciphertext left behind (in
the database and in its backups) can no longer be read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consent_api.config import ConsentSettings
from rescind_common.keyfiles import create_once

_NONCE = 12


class MasterKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(key)
        self._pepper = hmac.new(key, b"rescind/subject-sub-pepper/v1", hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, settings: ConsentSettings) -> MasterKey:
        if settings.consent_master_key:
            return cls(base64.b64decode(settings.consent_master_key))
        return cls(_dev_master_key(settings.keys_dir / "master.key"))

    def sub_hash(self, sub: str) -> str:
        """Keyed hash of the caller's `sub`: the database never holds the raw identifier."""
        return hmac.new(self._pepper, sub.encode(), hashlib.sha256).hexdigest()

    def new_wrapped_key(self, subject_id: str) -> bytes:
        return self.wrap(AESGCM.generate_key(bit_length=256), subject_id)

    def wrap(self, data_key: bytes, subject_id: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, b"subject-key:" + subject_id.encode())

    def unwrap(self, wrapped: bytes, subject_id: str) -> bytes:
        return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], b"subject-key:" + subject_id.encode())


def seal(data_key: bytes, plaintext: bytes, context: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, context.encode())


def unseal(data_key: bytes, sealed: bytes, context: str) -> bytes:
    return AESGCM(data_key).decrypt(sealed[:_NONCE], sealed[_NONCE:], context.encode())


def _dev_master_key(path: Path) -> bytes:
    return base64.b64decode(create_once(path, lambda: base64.b64encode(os.urandom(32))).strip())
