"""`rescind receipt verify`: check a consent receipt against consent-api's JWKS, the published one or
a saved file (`--jwks FILE`: offline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rescind_cli import jws
from rescind_cli.audit import default_consent_url


def verify(receipt: str, url: str, jwks_file: Path | None = None) -> int:
    """Print the receipt's verified claims; 0 when the signature checks out, 1 when it does not."""
    token = sys.stdin.read().strip() if receipt == "-" else receipt.strip()
    keys = jws.load_jwks_file(jwks_file) if jwks_file else jws.fetch_jwks(url)
    source = str(jwks_file) if jwks_file else f"{url.rstrip('/')}/.well-known/jwks.json"
    try:
        claims, kid = jws.verify(token, keys)
    except jws.Invalid as exc:
        print(f"INVALID: {exc} ({source})", file=sys.stderr)
        return 1
    print(json.dumps(claims, indent=2, sort_keys=True))
    print(f"valid: signed by key {kid}", file=sys.stderr)
    return 0


def default_url() -> str:
    return default_consent_url()
