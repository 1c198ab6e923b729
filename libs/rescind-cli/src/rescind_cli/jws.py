"""Verifying Rescind's signed records (consent receipts, revocation proofs) against a JWKS: the
live one or a saved file (offline: no network at all)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jwt

from rescind_cli.errors import CliError

# The algorithm each key type signs with: the header's `alg` must be the key's (no `none`, no HMAC).
ALGORITHMS = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}


class Invalid(Exception):
    """The token does not verify: the reason, for the user."""


def load_jwks_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise CliError(f"{path} is not a JWKS (an object with a `keys` list)")
    return data


def fetch_jwks(url: str) -> dict[str, Any]:
    jwks_url = f"{url.rstrip('/')}/.well-known/jwks.json"
    try:
        data = httpx.get(jwks_url, timeout=10).raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise CliError(f"cannot read {jwks_url}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise CliError(f"{jwks_url} is not a JWKS")
    return data


def verify(token: str, jwks: dict[str, Any], typ: str | None = None) -> tuple[dict[str, Any], str]:
    """The verified claims and the key id; Invalid when the signature or the header does not hold,
    CliError when the input is not a compact JWS at all."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise CliError(f"not a compact JWS: {exc}") from exc
    kid = header.get("kid")
    keys = {k.get("kid"): k for k in jwks["keys"] if isinstance(k, dict)}
    if kid not in keys:
        raise Invalid(f"no key {kid!r} in the JWKS")
    jwk = keys[kid]
    algorithm = str(jwk.get("alg") or ALGORITHMS.get((str(jwk.get("kty")), str(jwk.get("crv"))), ""))
    if algorithm not in ALGORITHMS.values():
        raise Invalid(f"key {kid!r} is not an Ed25519 or P-256 signing key")
    if header.get("alg") != algorithm:
        raise Invalid(f"the header says alg {header.get('alg')!r}, key {kid!r} signs with {algorithm}")
    if typ is not None and header.get("typ") != typ:
        raise Invalid(f"the header says typ {header.get('typ')!r}, not {typ!r}")
    try:
        claims = jwt.decode(
            token,
            jwt.PyJWK(jwk, algorithm=algorithm),
            algorithms=[algorithm],
            options={"verify_aud": False, "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise Invalid(str(exc)) from exc
    return dict(claims), str(kid)
