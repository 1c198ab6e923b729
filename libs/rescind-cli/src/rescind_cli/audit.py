"""`rescind audit verify`: ask consent-api to check its audit chain."""

from __future__ import annotations

import datetime as dt
import json
import os

import httpx

from rescind_cli.errors import CliError
from rescind_cli.tokens import dev_token, load_settings

OPERATOR_SUB = "ops-cli"


def default_consent_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('RESCIND_CONSENT_PORT', '8001')}"


def verify(url: str) -> int:
    """Print consent-api's verdict; 0 when the chain is intact, 1 otherwise."""
    settings = load_settings()
    token = dev_token(settings, role="operator", sub=OPERATOR_SUB, ttl=dt.timedelta(minutes=5))
    endpoint = f"{url.rstrip('/')}/v1/audit/verify"
    try:
        response = httpx.get(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {endpoint}: {exc} (is the stack running? `make run`)") from exc
    try:
        body = response.json()
    except ValueError:
        detail = response.text[:500]
        raise CliError(f"{endpoint} answered {response.status_code} without JSON: {detail}") from None
    print(json.dumps(body, indent=2, sort_keys=True))
    if response.status_code != 200:
        raise CliError(f"{endpoint} answered {response.status_code}")
    return 0 if isinstance(body, dict) and body.get("ok") is True else 1
