"""Authenticate before reading a body (issue 13, finding 1): a request that sends a body without a
valid token is answered 401 before the app reads a byte of it, on every write of every service; the
JSON guard still names the field for callers with a token, and bounds what a body may cost to parse."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rescind_common.app import MAX_JSON_CONTAINERS, MAX_JSON_SEPARATORS, create_app
from rescind_common.auth_gate import BODY_METHODS, PUBLIC_BODY_PATHS

from support.helpers import assert_problem, sha
from support.security import SecurityStack, World, bad_token_headers
from test_authz_matrix import MATRIX, PUBLIC, SERVICES, Op

MIB = 1024 * 1024
BODY_OPS = [pytest.param(op, id=op.id) for op in MATRIX if op.method in BODY_METHODS]
REFUSED_TOKENS = ["no-token", "garbage", "forged-signature", "expired", "wrong-audience"]


def _scope(op: Op, headers: dict[str, str]) -> dict[str, Any]:
    path = op.url("nosuchrecord" if op.kind else None)
    raw = [
        (b"host", b"test"),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % (16 * MIB)),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": op.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("198.51.100.9", 50000),
        "server": ("test", 80),
    }


def _call_without_body(app: FastAPI, scope: dict[str, Any]) -> tuple[int, dict[str, str], Any, int]:
    """Call `app` with a `receive` that never delivers the body: (status, headers, body, receives)."""
    receives = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal receives
        receives += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        # A hang guard, not a timing check: an app that waits for the body never answers.
        with anyio.fail_after(60):
            await app(scope, receive, send)

    anyio.run(main)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body), receives


@pytest.mark.parametrize("kind", REFUSED_TOKENS)
@pytest.mark.parametrize("op", BODY_OPS)
def test_a_body_without_a_valid_token_is_refused_before_it_is_read(
    sec_stack: SecurityStack, op: Op, kind: str
) -> None:
    headers = bad_token_headers(sec_stack, kind, op.roles[0], "gate-caller")
    status, response_headers, body, receives = _call_without_body(
        sec_stack.app(op.service), _scope(op, headers)
    )
    assert (status, receives) == (401, 0), body
    assert body["type"].endswith("/unauthorized"), body
    assert response_headers["content-type"] == "application/problem+json"
    assert response_headers["www-authenticate"].startswith("Bearer"), response_headers


def test_the_public_body_paths_are_the_matrix_s_public_writes() -> None:
    """Every write is in the authorization matrix (protected) or listed public there; the gate lets
    exactly the public ones through without a token."""
    public_writes = {path for s in SERVICES for method, path in PUBLIC[s] if method in BODY_METHODS}
    assert public_writes == set(PUBLIC_BODY_PATHS)


def test_a_public_path_takes_a_body_without_a_token() -> None:
    def app(public: set[str]) -> FastAPI:
        made = create_app(
            service="t",
            title="t",
            version="0",
            description="",
            readiness={},
            max_body_bytes=MIB,
            public_body_paths=public,
        )

        @made.post("/open")
        def post_open(body: dict[str, Any]) -> dict[str, Any]:
            return body

        return made

    with TestClient(app({"/open"})) as client:
        assert client.post("/open", json={"a": 1}).json() == {"a": 1}
    with TestClient(app(set())) as client:
        assert_problem(client.post("/open", json={"a": 1}), 401)


@pytest.fixture
def served(sec_stack: SecurityStack) -> Iterator[tuple[str, int]]:
    """consent-api served by a real uvicorn on a free port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(sec_stack.app("consent"), lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.02)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(30)
    sock.close()


def _raw(address: tuple[str, int], head: bytes) -> bytes:
    with socket.create_connection(address, timeout=60) as conn:  # timeout: a hang guard only
        conn.sendall(head)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_a_real_server_answers_401_to_16_mib_announced_and_never_sent(
    sec_stack: SecurityStack, served: tuple[str, int]
) -> None:
    head = (
        b"POST /v1/samples/batch HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (16 * MIB)
    )
    answer = _raw(served, head)
    assert answer.startswith(b"HTTP/1.1 401 "), "the server waited for the body"
    # ... and it will not take the body later either: the connection is closed.
    assert b"\r\nconnection: close\r\n" in answer.lower(), answer
    # With a token the same request is let through to read its body: the server waits for it.
    token = sec_stack.headers("subject", "gate-raw")["Authorization"].encode()
    with socket.create_connection(served, timeout=60) as conn:
        conn.sendall(head.replace(b"\r\n\r\n", b"\r\nAuthorization: " + token + b"\r\n\r\n"))
        body = json.dumps({"samples": [{"kind": "face_image", "sha256": sha("gate-raw")}]}).encode()
        conn.sendall(body + b" " * (16 * MIB - len(body)))
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += conn.recv(65536)
    assert reply.startswith(b"HTTP/1.1 201 "), reply[:200]


def test_a_body_of_too_many_arrays_is_413_before_it_is_parsed(sec_worlds: dict[str, World]) -> None:
    world = sec_worlds["consent"]
    raw = b"[" + b"[[[]]]," * (MIB // 7 - 1) + b"[]]"  # ~450,000 arrays in 1 MiB
    r = world.client.post(
        "/v1/samples", content=raw, headers={**world.headers("subject"), "Content-Type": "application/json"}
    )
    body = assert_problem(r, 413, "body")
    assert body["limit"] == MAX_JSON_CONTAINERS, body
    assert "arrays and objects" in body["detail"], body


def test_a_large_authenticated_body_is_still_checked_naming_the_field(sec_worlds: dict[str, World]) -> None:
    """Large enough to be walked in a worker thread: the answer is the same as inline."""
    world = sec_worlds["consent"]
    samples = [{"kind": "face_image", "sha256": sha(f"gate-big-{i}")} for i in range(3000)]
    samples[2999]["kind"] = "face\x00image"
    r = world.client.post("/v1/samples/batch", json={"samples": samples}, headers=world.headers("subject"))
    assert_problem(r, 422, "body.samples[2999].kind")


def test_a_body_of_too_many_values_is_413_before_it_is_parsed(sec_worlds: dict[str, World]) -> None:
    world = sec_worlds["consent"]
    raw = b'{"samples":[' + b"1," * (MAX_JSON_SEPARATORS + 1) + b"1]}"  # ~4 MiB: within the batch limit
    r = world.client.post(
        "/v1/samples/batch",
        content=raw,
        headers={**world.headers("subject"), "Content-Type": "application/json"},
    )
    body = assert_problem(r, 413, "body")
    assert body["limit"] == MAX_JSON_SEPARATORS and "commas" in body["detail"], body


def test_a_tokenless_write_is_answered_outside_the_app_and_counted() -> None:
    """No Authorization header at all: the 401 comes before any layer of the app runs (no route,
    no request id), the body unread, and /metrics counts it; a write with a token still reaches
    the route."""
    made = create_app(
        service="gate-shortcut",
        title="t",
        version="0",
        description="",
        readiness={},
        max_body_bytes=MIB,
        unauthenticated_write_delay=0.01,
    )
    reached: list[str] = []

    @made.post("/write")
    def write(body: dict[str, Any]) -> dict[str, Any]:
        reached.append("write")
        return body

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/write",
        "raw_path": b"/write",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(16 * MIB).encode())],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
        "app": made,
    }
    status, headers, body, receives = _call_without_body(made, scope)
    assert (status, receives) == (401, 0)
    assert body == {
        "type": "https://rescind.dev/problems/unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "A bearer token is required.",
    }
    assert headers["www-authenticate"].startswith("Bearer") and headers["connection"] == "close"
    assert "x-request-id" not in headers and reached == []
    with TestClient(made) as client:
        metrics = client.get("/metrics").text
    assert 'method="POST",route="refused-without-token",service="gate-shortcut",status="401"} 1.0' in metrics
