"""Operator tasks over the services' HTTP APIs: licensees, failing endpoints, dead letters.

Authenticates with `RESCIND_TOKEN` when set (production: a token from your identity provider
with role operator), otherwise with a development operator token.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import httpx

from rescind_cli.errors import CliError
from rescind_cli.tokens import dev_token, load_settings


def service_url(var: str, port: int) -> str:
    return f"http://127.0.0.1:{os.environ.get(var, str(port))}"


def _headers() -> dict[str, str]:
    token = os.environ.get("RESCIND_TOKEN") or dev_token(
        load_settings(), role="operator", sub="ops-cli", ttl=dt.timedelta(minutes=10)
    )
    return {"Authorization": f"Bearer {token}"}


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    try:
        r = httpx.request(method, url, json=body, headers=_headers(), timeout=60)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc} (is the stack running? `make run`)") from exc
    try:
        data = r.json()
    except ValueError:
        data = r.text
    if r.status_code >= 400:
        detail = data.get("detail") if isinstance(data, dict) else data
        raise CliError(f"{method} {url} answered {r.status_code}: {detail}")
    return data


def show(data: Any) -> int:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


def create_licensee(registry: str, name: str, contact_email: str | None) -> int:
    body: dict[str, Any] = {"name": name}
    if contact_email:
        body["contact_email"] = contact_email
    return show(_call("POST", f"{registry}/v1/licensees", body))


def list_licensees(registry: str) -> int:
    return show(_call("GET", f"{registry}/v1/licensees"))


def failing_endpoints(worker: str) -> int:
    return show(_call("GET", f"{worker}/v1/operator/endpoints?failing=true"))


def dead_letters(worker: str, licensee_id: str | None) -> int:
    query = f"?licensee_id={licensee_id}" if licensee_id else ""
    return show(_call("GET", f"{worker}/v1/operator/dead-letters{query}"))


def redrive(worker: str, licensee_id: str | None, endpoint_id: str | None) -> int:
    return show(
        _call(
            "POST",
            f"{worker}/v1/operator/dead-letters/redrive",
            {"licensee_id": licensee_id, "endpoint_id": endpoint_id},
        )
    )
