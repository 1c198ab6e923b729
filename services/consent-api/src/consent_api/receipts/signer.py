"""Consent receipts: compact JWS signed with Ed25519 (EdDSA), verifiable against our JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from consent_api.config import ConsentSettings
from rescind_common.keyfiles import create_once

ALGORITHM = "EdDSA"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    # RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order.
    thumb = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
    return {**jwk, "kid": _b64(thumb), "alg": ALGORITHM, "use": "sig"}


def _load_or_create(path: Path, create: bool) -> Ed25519PrivateKey:
    if not path.exists() and not create:
        raise FileNotFoundError(path)

    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    key = serialization.load_pem_private_key(create_once(path, make), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


class ReceiptSigner:
    def __init__(self, key: Ed25519PrivateKey, previous: list[Ed25519PublicKey] | None = None) -> None:
        self._key = key
        self.jwk = public_jwk(key.public_key())
        self.kid = self.jwk["kid"]
        self._published = [self.jwk] + [public_jwk(k) for k in previous or []]
        # The protected header of each `typ` never changes: encoded once, exactly as PyJWT would
        # (sorted keys).
        self._headers: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: ConsentSettings) -> ReceiptSigner:
        if settings.consent_receipt_key_file:
            key = _load_or_create(settings.consent_receipt_key_file, create=False)
        else:
            key = _load_or_create(settings.keys_dir / "receipt-ed25519.pem", create=True)
        previous = [
            _load_or_create(p, create=False).public_key() for p in settings.consent_receipt_previous_key_files
        ]
        return cls(key, previous)

    def _header(self, typ: str) -> str:
        header = self._headers.get(typ)
        if header is None:
            fields = {"alg": ALGORITHM, "kid": self.kid, "typ": typ}
            header = _b64(json.dumps(fields, separators=(",", ":"), sort_keys=True).encode())
            self._headers[typ] = header
        return header

    def sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        """The compact JWS that `jwt.encode(claims, key, algorithm="EdDSA", headers={"kid", "typ"})`
        returns, byte for byte (Ed25519 is deterministic), without its per-call header, key and
        algorithm handling. Claims must be JSON values already (times as ints)."""
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header(typ)}.{payload}"
        return f"{signing_input}.{_b64(self._key.sign(signing_input.encode()))}"

    def jwks(self) -> dict[str, Any]:
        return {"keys": self._published}

    def verify(self, token: str) -> dict[str, Any]:
        """Verify a receipt against our published keys (used by tests and the CLI)."""
        kid = jwt.get_unverified_header(token).get("kid")
        for jwk in self._published:
            if jwk["kid"] == kid:
                key = OKPAlgorithm.from_jwk(json.dumps(jwk))
                assert isinstance(key, Ed25519PublicKey)
                return dict(jwt.decode(token, key, algorithms=[ALGORITHM], options={"verify_aud": False}))
        raise jwt.InvalidKeyError("unknown kid")
