"""Small helpers shared by the tests."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from fastapi.testclient import TestClient


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
