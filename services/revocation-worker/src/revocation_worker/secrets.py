"""Endpoint signing secrets: `whsec_<base64 of 24 random bytes>`, encrypted at rest with AES-GCM."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
    if path.exists():
        return base64.b64decode(path.read_bytes().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(key))
    os.replace(tmp, path)
    return key
