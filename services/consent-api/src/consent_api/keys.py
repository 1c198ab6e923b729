"""Key material: the master keyring that wraps per-subject keys (each wrapped key stored with its
master key's id, so the master key can be rotated), the subject pepper, and sealing with AES-256-GCM.

Crypto-shredding: every piece of a subject's personal data is sealed under that
subject's own key; erasure deletes the key, and the ciphertext left behind (in
the database and in its backups) can no longer be read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consent_api.config import ConsentSettings
from rescind_common.keyfiles import create_once
from rescind_common.keyring import LEGACY_KEY_ID, Keyring

_NONCE = 12
_PEPPER_LABEL = b"rescind/subject-sub-pepper/v1"


def legacy_pepper(master_key: bytes) -> bytes:
    """The pepper of deployments from before RESCIND_CONSENT_SUBJECT_PEPPER: derived from master key
    `v1`. Kept so that such a deployment keeps every subject's identity."""
    return hmac.new(master_key, _PEPPER_LABEL, hashlib.sha256).digest()


class MasterKey:
    """The master keyring that wraps per-subject data keys, and the pepper of `sub` hashes."""

    def __init__(self, ring: Keyring, pepper: bytes, legacy: bytes | None = None) -> None:
        self.ring = ring
        self._pepper = pepper
        # The legacy pepper (of master key `v1`) when known: what subjects from before the pepper
        # check were hashed with.
        self._legacy = legacy
        # Set once this process has matched its pepper against the database's (subjects.sub_hash).
        self.pepper_verified = False

    @classmethod
    def from_settings(cls, settings: ConsentSettings) -> MasterKey:
        dev_master = settings.keys_dir / "master.key"
        had_dev_master = dev_master.exists()
        ring = Keyring.from_settings(
            settings.consent_master_keys,
            settings.consent_master_key_id,
            settings.consent_master_key,
            dev_master,
        )
        # Master key `v1`: configured, or (development without keys) the key file.
        legacy = settings.legacy_master_key
        v1 = base64.b64decode(legacy) if legacy else None
        if v1 is None and not settings.consent_master_keys:
            v1 = ring.raw(LEGACY_KEY_ID)
        return cls(
            ring,
            subject_pepper(settings, ring, had_dev_master=had_dev_master),
            legacy_pepper(v1) if v1 is not None else None,
        )

    def pepper_check(self) -> str:
        """A value that tells peppers apart without revealing them (stored in `key_checks`)."""
        return hmac.new(self._pepper, b"rescind/pepper-check/v1", hashlib.sha256).hexdigest()

    def pepper_is_legacy(self) -> bool | None:
        """Is the pepper the legacy one? None: the legacy one is not known (no key `v1`)."""
        return None if self._legacy is None else hmac.compare_digest(self._legacy, self._pepper)

    def sub_hash(self, sub: str) -> str:
        """Keyed hash of the caller's `sub`: the database never holds the raw identifier."""
        return hmac.new(self._pepper, sub.encode(), hashlib.sha256).hexdigest()

    def new_wrapped_key(self, subject_id: str) -> tuple[str, bytes]:
        """A new data key, wrapped: (the master key's id, the wrapped key)."""
        return self.wrap(AESGCM.generate_key(bit_length=256), subject_id)

    def wrap(self, data_key: bytes, subject_id: str) -> tuple[str, bytes]:
        return self.ring.encrypt(data_key, _aad(subject_id))

    def unwrap(self, key_id: str, wrapped: bytes, subject_id: str) -> bytes:
        """Raises KeyUnavailable when master key `key_id` is not configured (or is not the one)."""
        return self.ring.decrypt(key_id, wrapped, _aad(subject_id))


def _aad(subject_id: str) -> bytes:
    return b"subject-key:" + subject_id.encode()


def subject_pepper(settings: ConsentSettings, ring: Keyring, *, had_dev_master: bool = False) -> bytes:
    """RESCIND_CONSENT_SUBJECT_PEPPER; else (development) the pepper key file; else the legacy
    pepper of master key `v1` (production refuses to start when neither is there: ConsentSettings).
    Development makes the key file once: the legacy pepper when a development master key existed
    before (its subjects keep their identity), random otherwise."""
    if settings.consent_subject_pepper:
        return base64.b64decode(settings.consent_subject_pepper)
    path = settings.keys_dir / "subject-pepper.key"
    if settings.profile == "development" and path.exists():
        return base64.b64decode(path.read_bytes().strip())
    legacy = settings.legacy_master_key
    if legacy is not None:
        return legacy_pepper(base64.b64decode(legacy))
    dev_master = None if settings.consent_master_keys else ring.raw(LEGACY_KEY_ID)
    if settings.profile != "development" or dev_master is None:
        raise ValueError(
            "no subject pepper: set RESCIND_CONSENT_SUBJECT_PEPPER (or keep master key 'v1', from which "
            "the legacy pepper is derived; `consent-api keys legacy-pepper` prints it)"
        )
    made = legacy_pepper(dev_master) if had_dev_master else os.urandom(32)
    return base64.b64decode(create_once(path, lambda: base64.b64encode(made)).strip())


def seal(data_key: bytes, plaintext: bytes, context: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, context.encode())


def unseal(data_key: bytes, sealed: bytes, context: str) -> bytes:
    return AESGCM(data_key).decrypt(sealed[:_NONCE], sealed[_NONCE:], context.encode())
