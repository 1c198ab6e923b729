"""Endpoint signing secrets: `whsec_<base64 of 24 random bytes>`, encrypted at rest with AES-GCM."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rescind_common.keyfiles import create_once
from revocation_worker.config import WorkerSettings

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(24)).decode()


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> SecretBox:
        if settings.worker_secret_key:
            return cls(base64.b64decode(settings.worker_secret_key))
        return cls(_dev_key(settings.state_dir / "keys" / "worker-secrets.key"))

    def seal(self, secret: str, endpoint_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), endpoint_id.encode())

    def open(self, sealed: bytes, endpoint_id: str) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], endpoint_id.encode()).decode()


def _dev_key(path: Path) -> bytes:
    return base64.b64decode(create_once(path, lambda: base64.b64encode(os.urandom(32))).strip())
