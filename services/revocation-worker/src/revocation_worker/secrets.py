"""Endpoint signing secrets: `whsec_<base64 of 24 random bytes>`, encrypted at rest with AES-GCM
under a keyring (rescind_common.keyring): each sealed secret is stored with its key's id."""

from __future__ import annotations

import base64
import os

from rescind_common.keyring import Keyring
from revocation_worker.config import WorkerSettings

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(24)).decode()


class SecretBox:
    def __init__(self, ring: Keyring) -> None:
        self.ring = ring

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> SecretBox:
        return cls(
            Keyring.from_settings(
                settings.worker_secret_keys,
                settings.worker_secret_key_id,
                settings.worker_secret_key,
                settings.state_dir / "keys" / "worker-secrets.key",
            )
        )

    def seal(self, secret: str, endpoint_id: str) -> tuple[str, bytes]:
        """(the current key's id, the sealed secret)."""
        return self.ring.encrypt(secret.encode(), endpoint_id.encode())

    def open(self, key_id: str, sealed: bytes, endpoint_id: str) -> str:
        """Raises KeyUnavailable when key `key_id` is not configured (or is not the one)."""
        return self.ring.decrypt(key_id, sealed, endpoint_id.encode()).decode()
