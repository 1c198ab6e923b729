"""Small helpers shared by the tests."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from consent_api.config import ConsentSettings
from rescind_common.embedded_broker import free_port

TokenFactory = Callable[..., str]  # the `token` fixture: token(role, sub=None, **claims) -> a JWT


def migrated_db(
    backend: str, pg_database: Callable[[str], str], folder: Path, name: str, upgrade: Callable[[str], Any]
) -> str:
    """A new database of service `name` built by its Alembic `upgrade`: on PostgreSQL, or in
    `folder`/`name`.db on SQLite. Its URL."""
    url = pg_database(name) if backend == "postgresql" else f"sqlite:///{folder / f'{name}.db'}"
    upgrade(url)
    return url


def make_settings(db_url: str, state_dir: Path, **overrides: Any) -> ConsentSettings:
    values: dict[str, Any] = {
        "consent_database_url": db_url,
        "state_dir": state_dir,
        # No broker unless a test asks for one: the API never needs Kafka to accept a write.
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        # No registry either: access exports say the recipients are unavailable.
        "consent_registry_url": f"http://127.0.0.1:{free_port()}",
        "consent_run_scheduler": False,
        "consent_db_pool_size": 5,
        # Tests write checkpoints when they mean to (a background one would land in outboxes others read).
        "audit_checkpoint_interval_seconds": 86400.0,
    }
    values.update(overrides)
    return ConsentSettings(**values)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def sha(i: int | str | None = None) -> str:
    return hashlib.sha256(f"{uuid.uuid4()}-{i}".encode()).hexdigest()


def register(client: TestClient, headers: dict[str, str], n: int = 1, kind: str = "face_image") -> list[str]:
    if n == 1:
        r = client.post("/v1/samples", json={"kind": kind, "sha256": sha()}, headers=headers)
        assert r.status_code == 201, r.text
        return [r.json()["id"]]
    r = client.post(
        "/v1/samples/batch",
        json={"samples": [{"kind": kind, "sha256": sha(i)} for i in range(n)]},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return [s["id"] for s in r.json()["items"]]


def grant(client: TestClient, headers: dict[str, str], sample_ids: list[str], **body: Any) -> dict[str, Any]:
    payload = {"sample_ids": sample_ids, "purposes": ["model_training"], **body}
    r = client.post("/v1/consents", json=payload, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = dict(response.json())
    assert body["status"] == status and body["title"] and body["type"]
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert any(f == field or f.startswith(field) for f in fields), (field, body)
    return body


def bearer(tok: str) -> dict[str, str]:
    """Authorization headers for a token (same shape as the `seller` fixture)."""
    return {"Authorization": f"Bearer {tok}"}


def revoke(
    client: TestClient, headers: dict[str, str], consent_id: str, status: int = 202, **body: Any
) -> dict[str, Any]:
    r = client.post(f"/v1/consents/{consent_id}/revoke", json=body or None, headers=headers)
    assert r.status_code == status, r.text
    return dict(r.json())


def revoke_scope(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = client.post("/v1/revocations", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return dict(r.json())


def get_json(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = client.get(path, params=params or None, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def walk(
    client: TestClient, path: str, headers: dict[str, str], limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list, page by page; asserts each page respects `limit`."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100_000):
        query: dict[str, Any] = {"limit": limit, **params}
        if cursor:
            query["cursor"] = cursor
        page = get_json(client, path, headers, **query)
        assert len(page["items"]) <= limit, page
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items
        assert page["items"], "a page with a next_cursor must not be empty"
    raise AssertionError("pagination never ended")


def subject_id(client: TestClient, headers: dict[str, str]) -> str:
    """The pseudonymous subject id behind a seller's token (from an access export)."""
    r = client.post("/v1/rights-requests", json={"type": "access"}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["export"]["subject"]["id"])
