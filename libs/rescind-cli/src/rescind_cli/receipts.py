"""`rescind receipt verify`: check a consent receipt against consent-api's published JWKS."""

from __future__ import annotations

import json
import sys

import httpx
import jwt

from rescind_cli.audit import default_consent_url
from rescind_cli.errors import CliError

RECEIPT_ALGORITHMS = ["EdDSA"]


def verify(receipt: str, url: str) -> int:
    """Print the receipt's verified claims; 0 when the signature checks out, 1 when it does not."""
    token = sys.stdin.read().strip() if receipt == "-" else receipt.strip()
    jwks_url = f"{url.rstrip('/')}/.well-known/jwks.json"
    try:
        jwks = httpx.get(jwks_url, timeout=10).raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise CliError(f"cannot read {jwks_url}: {exc}") from exc
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as exc:
        raise CliError(f"not a compact JWS: {exc}") from exc
    keys = {k.get("kid"): k for k in jwks.get("keys", [])}
    if kid not in keys:
        print(f"INVALID: no key {kid!r} in {jwks_url}", file=sys.stderr)
        return 1
    try:
        key = jwt.PyJWK(keys[kid])
        claims = jwt.decode(token, key, algorithms=RECEIPT_ALGORITHMS, options={"verify_aud": False})
    except jwt.PyJWTError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(claims, indent=2, sort_keys=True))
    print(f"valid: signed by key {kid}", file=sys.stderr)
    return 0


def default_url() -> str:
    return default_consent_url()
