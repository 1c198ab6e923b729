"""Limits, on every service: oversized bodies (413), deeply nested JSON and huge arrays (a small 4xx,
quickly: never a 5xx, a hang or an answer bigger than the question), and per-caller rate limiting
(429 problem JSON with Retry-After)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from consent_api.main import create_app as create_consent_app
from registry.main import create_app as create_registry_app
from rescind_common.app import MAX_JSON_DEPTH
from rescind_common.ids import new_id
from rescind_common.problems import MAX_ERRORS
from rescind_common.settings import RescindSettings
from revocation_worker.config import WorkerSettings
from revocation_worker.main import create_app as create_worker_app

from support.clock import Clock
from support.helpers import assert_problem, make_settings
from support.registry import make_registry_settings
from support.security import SecurityStack, World
from test_authz_matrix import MATRIX, Op

MIB = 1024 * 1024
DEFAULT_LIMIT = MIB
BATCH_LIMIT = 16 * MIB
# Documented in docs/api.md: these take bodies up to 16 MiB, every other endpoint up to 1 MiB.
BATCH_PATHS = {
    "consent": {"/v1/samples/batch", "/v1/consents", "/v1/revocations"},
    "registry": {"/v1/licenses", "/v1/models", "/v1/holders"},
    "worker": set(),
}
WRITES = [pytest.param(op, id=op.id) for op in MATRIX if op.method in ("POST", "PUT")]
BATCHES = [p for p in WRITES if p.values[0].path in BATCH_PATHS[p.values[0].service]]
JSON = {"Content-Type": "application/json"}


def request(world: World, op: Op, raw: Any, **kwargs: Any) -> Any:
    """`op` called by its first allowed role (tenant a, on a's own record) with the raw body `raw`."""
    record = world.record(op.kind, "a", fresh=op.fresh) if op.kind else None
    headers = {**world.headers(op.roles[0], "a"), **JSON}
    return world.client.request(op.method, op.url(record), content=raw, headers=headers, **kwargs)


def padded(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    head = b'{"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def chunked(raw: bytes) -> Iterator[bytes]:
    for i in range(0, len(raw), 256 * 1024):
        yield raw[i : i + 256 * 1024]


# -- oversized bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("op", WRITES)
def test_body_over_the_limit_is_413_on_every_write(sec_worlds: dict[str, World], op: Op) -> None:
    world = sec_worlds[op.service]
    limit = BATCH_LIMIT if op.path in BATCH_PATHS[op.service] else DEFAULT_LIMIT
    raw = padded(limit + 1)
    for label, content in (("content-length", raw), ("chunked", chunked(raw))):
        body = assert_problem(request(world, op, content), 413)
        assert body["limit"] == limit, (label, body)


@pytest.mark.parametrize("op", BATCHES)
def test_batch_endpoints_take_more_than_the_default(sec_worlds: dict[str, World], op: Op) -> None:
    """1 MiB + 1 is past the default limit but within the batch one: refused for its content, not size."""
    r = request(sec_worlds[op.service], op, padded(DEFAULT_LIMIT + 1))
    assert 400 <= r.status_code < 500 and r.status_code != 413, r.text[:300]
    assert_problem(r, r.status_code)


# -- deep nesting --------------------------------------------------------------------------


def nested(depth: int, kind: str = "array") -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def takes_body(stack: SecurityStack, op: Op) -> bool:
    spec = stack.app(op.service).openapi()
    return "requestBody" in spec["paths"][op.path][op.method.lower()]


@pytest.mark.parametrize("op", WRITES)
def test_10000_levels_of_nesting_is_a_4xx_on_every_write(
    sec_stack: SecurityStack, sec_worlds: dict[str, World], op: Op
) -> None:
    """Endpoints that take a body refuse it (4xx problem); the others ignore it. Never a 5xx."""
    world = sec_worlds[op.service]
    for raw in (nested(10_000), nested(10_000, "object"), nested(MAX_JSON_DEPTH + 5, "object")):
        r = request(world, op, raw)
        if takes_body(sec_stack, op):
            assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        assert r.status_code < 500, r.text[:300]
        if r.status_code >= 400:
            assert_problem(r, r.status_code)


def _deep_value(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_deep_evidence_is_refused_naming_the_field_and_the_notice_stays_readable(
    sec_worlds: dict[str, World],
) -> None:
    """Free-form evidence is stored and answered with every read of the notice: a deep one must not get
    in (it used to be stored, then broke every read of the notice and of the lists holding it)."""
    w = sec_worlds["worker"]
    h = w.headers("licensee", "a")
    notice = w.record("notice", "a", fresh=True)
    too_deep = {"status": "completed", "evidence": _deep_value(MAX_JSON_DEPTH + 10)}
    body = assert_problem(w.client.post(f"/v1/notices/{notice}/ack", json=too_deep, headers=h), 422)
    assert body["errors"][0]["field"].startswith("body.evidence.a.a"), body
    assert w.client.get(f"/v1/notices/{notice}", headers=h).json()["status"] != "acknowledged"
    # Control: evidence nested well within the bound is taken, and read back.
    fine = {"status": "completed", "evidence": _deep_value(MAX_JSON_DEPTH - 5)}
    r = w.client.post(f"/v1/notices/{notice}/ack", json=fine, headers=h)
    assert r.status_code == 200, r.text
    assert w.client.get(f"/v1/notices/{notice}", headers=h).json()["ack"]["evidence"] == fine["evidence"]
    assert w.client.get("/v1/notices", headers=h).status_code == 200


def test_large_evidence_is_refused(sec_worlds: dict[str, World]) -> None:
    w = sec_worlds["worker"]
    notice = w.record("notice", "a", fresh=True)
    body = {"status": "completed", "evidence": {"log": "x" * (65 * 1024)}}
    r = w.client.post(f"/v1/notices/{notice}/ack", json=body, headers=w.headers("licensee", "a"))
    assert_problem(r, 422, "body.evidence")


@pytest.mark.parametrize(
    ("service", "path", "value"),
    [
        ("consent", "/v1/samples", "\u0000"),
        ("consent", "/v1/samples", "\ud800"),
        ("registry", "/v1/licensees", "\u0000"),
        ("registry", "/v1/models", "\u0000"),
        ("registry", "/v1/models", "\udfff"),
        ("worker", "/v1/endpoints", "\u0000"),
        ("worker", "/v1/notices/{notice_id}/ack", "\u0000"),
        ("worker", "/v1/notices/{notice_id}/ack", "\ud800"),
    ],
)
def test_impossible_strings_are_422_naming_the_field(
    sec_worlds: dict[str, World], service: str, path: str, value: str
) -> None:
    """NUL (PostgreSQL refuses it in text) and unpaired surrogates (no UTF-8 for them) used to reach
    the database or the response encoder: 500s on registry names, dataset versions, endpoint
    descriptions and ack evidence."""
    op = next(o for o in MATRIX if o.service == service and o.path == path and o.method == "POST")
    world = sec_worlds[service]
    valid = op.body(world, "a") if op.body else {}
    field, target = {
        "/v1/samples": ("media_type", valid),
        "/v1/licensees": ("name", valid),
        "/v1/models": ("version", valid),
        "/v1/endpoints": ("description", valid),
        "/v1/notices/{notice_id}/ack": ("note", valid.setdefault("evidence", {})),
    }[path]
    target[field] = f"a{value}b"
    raw = json.dumps(valid).encode()  # ensure_ascii: the escapes travel as \u0000 / \ud800
    r = request(world, op, raw)
    body = assert_problem(r, 422)
    assert any(e["field"].endswith(field) for e in body["errors"]), body


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_422(sec_worlds: dict[str, World], literal: bytes) -> None:
    w = sec_worlds["worker"]
    notice = w.record("notice", "a", fresh=True)
    raw = b'{"status":"completed","evidence":{"score":' + literal + b"}}"
    r = w.client.post(
        f"/v1/notices/{notice}/ack", content=raw, headers={**w.headers("licensee", "a"), **JSON}
    )
    assert_problem(r, 422, "body.evidence.score")


# -- huge arrays -----------------------------------------------------------------------------


def _fill(prefix: bytes, item: bytes, suffix: bytes, budget: int) -> tuple[bytes, int]:
    n = (budget - len(prefix) - len(suffix) - 64) // (len(item) + 1)
    return prefix + b",".join([item] * n) + suffix, n


# (service, method, path, prefix, item, suffix): a list as long as the body limit allows.
HUGE = [
    ("consent", "/v1/samples/batch", b'{"samples":[', b"{}", b"]}"),
    ("consent", "/v1/consents", b'{"purposes":["model_training"],"sample_ids":[', b'"x"', b"]}"),
    ("consent", "/v1/revocations", b'{"scope":"samples","sample_ids":[', b'"x"', b"]}"),
    ("consent", "/v1/consents/{consent_id}/revoke", b'{"sample_ids":[', b'"x"', b"]}"),
    (
        "consent",
        "/v1/samples",
        b'{"kind":"face_image","sha256":"' + b"a" * 64 + b'","attributes":{',
        None,
        b"}}",
    ),
    (
        "registry",
        "/v1/licenses",
        b'{"licensee_id":"x","consent_id":"x","purpose":"x","sample_ids":[',
        b'"x"',
        b"]}",
    ),
    ("registry", "/v1/holders", b'{"sample_ids":[', b'"x"', b"]}"),
    ("registry", "/v1/models", b'{"name":"m","version":"1","license_ids":[', b'"x"', b"]}"),
    (
        "registry",
        "/v1/models",
        b'{"name":"m","version":"1","datasets":[',
        b'{"name":"d","version":"1"}',
        b"]}",
    ),
    ("registry", "/v1/models", b'{"name":"m","version":"1","shards":[', b'{"shard_id":"s"}', b"]}"),
    ("worker", "/v1/notices/{notice_id}/ack", b'{"status":"completed","models":[', b"{}", b"]}"),
    ("worker", "/v1/notices/{notice_id}/ack", b'{"status":"completed","evidence":{', None, b"}}"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("service", "path", "prefix", "item", "suffix"),
    [pytest.param(*h, id=f"{h[0]} {h[1]} {h[2][-20:].decode()}") for h in HUGE],
)
def test_huge_arrays_are_a_small_quick_4xx(
    sec_worlds: dict[str, World], service: str, path: str, prefix: bytes, item: bytes | None, suffix: bytes
) -> None:
    """A list (or object) as long as the body limit allows, of junk: a 413 or 422 problem that names
    the field, small (not one error per item), and it comes back (a 16 MiB list of bad ids used to
    keep the event loop busy for tens of seconds and answer with hundreds of megabytes)."""
    op = next(o for o in MATRIX if o.service == service and o.path == path and o.method == "POST")
    limit = BATCH_LIMIT if path in BATCH_PATHS[service] else DEFAULT_LIMIT
    if item is None:  # an object with as many distinct keys as fit
        keys: list[bytes] = []
        size = len(prefix) + len(suffix)
        while size + 16 < limit:
            keys.append(b'"k%d":1' % len(keys))
            size += len(keys[-1]) + 1
        raw = prefix + b",".join(keys) + suffix
    else:
        raw, _ = _fill(prefix, item, suffix, limit)
    assert len(raw) <= limit
    r = request(sec_worlds[service], op, raw)
    assert r.status_code in (413, 422), (r.status_code, r.text[:300])
    body = assert_problem(r, r.status_code)
    if r.status_code == 413:
        assert isinstance(body["limit"], int), body
    assert len(r.content) < 32 * 1024, f"{len(r.content)} bytes of answer"


def test_many_field_errors_are_truncated(sec_worlds: dict[str, World]) -> None:
    """Below the list limits, every item bad: the first errors and how many there were."""
    w = sec_worlds["registry"]
    r = w.client.post("/v1/holders", json={"sample_ids": ["x"] * 5000}, headers=w.headers("operator"))
    body = assert_problem(r, 422, "body.sample_ids[0]")
    assert len(body["errors"]) == MAX_ERRORS
    assert body["errors_truncated"] is True and body["error_count"] == 5000
    assert len(r.content) < 32 * 1024


# -- rate limiting ----------------------------------------------------------------------------


# One read per service, by the role that may make it.
READS = {
    "consent": ("subject", "/v1/samples"),
    "registry": ("licensee", "/v1/licenses"),
    "worker": ("licensee", "/v1/notices"),
}


def limited_app(stack: SecurityStack, service: str, **limits: Any) -> FastAPI:
    if service == "consent":
        return create_consent_app(make_settings(stack.urls["consent"], stack.state_dir, **limits))
    if service == "registry":
        return create_registry_app(make_registry_settings(stack.urls["registry"], stack.state_dir, **limits))
    settings = WorkerSettings(worker_database_url=stack.urls["worker"], state_dir=stack.state_dir, **limits)
    return create_worker_app(settings)


@pytest.fixture
def tight(sec_stack: SecurityStack) -> Iterator[Any]:
    """tight(service, rate=1, burst=3) -> (TestClient, Clock): the service with a small rate limit
    and a clock that only moves when the test says so."""
    made: list[TestClient] = []

    def make(service: str, rate: float = 1.0, burst: int = 3) -> tuple[TestClient, Clock]:
        app = limited_app(sec_stack, service, rate_limit_per_second=rate, rate_limit_burst=burst)
        clock = Clock()
        app.state.rate_limiter.clock = clock
        client = TestClient(app)
        made.append(client)
        return client, clock

    yield make
    for c in made:
        c.close()
        c.app.state.ctx.engine.dispose()


def assert_429(r: Any, retry_after: int) -> None:
    body = assert_problem(r, 429)
    assert body["type"].endswith("/rate-limited"), body
    assert r.headers["retry-after"] == str(retry_after), r.headers


@pytest.mark.parametrize("service", ["consent", "registry", "worker"])
def test_past_the_burst_a_token_gets_429_with_retry_after(
    sec_stack: SecurityStack, tight: Any, service: str
) -> None:
    client, clock = tight(service, rate=0.25, burst=3)
    role, path = READS[service]
    me, other = (sec_stack.headers(role, f"lic_rl{i}{service}") for i in (1, 2))
    for _ in range(3):
        assert client.get(path, headers=me).status_code == 200
    assert_429(client.get(path, headers=me), retry_after=4)  # one token every 4 s
    # Another caller is unaffected.
    assert client.get(path, headers=other).status_code == 200
    # Time refills the bucket, one token at a time.
    clock.now += 4
    assert client.get(path, headers=me).status_code == 200
    assert_429(client.get(path, headers=me), retry_after=4)


def test_a_refused_request_does_nothing(sec_stack: SecurityStack, tight: Any) -> None:
    client, _ = tight("consent", rate=1, burst=2)
    me = sec_stack.headers("subject", "rl-writer")
    for _ in range(2):
        assert client.get("/v1/samples", headers=me).status_code == 200
    assert_429(client.post("/v1/samples", json={"kind": "face_image", "sha256": "b" * 64}, headers=me), 1)
    # Read through the unlimited app on the same database: nothing was registered.
    assert sec_stack.consent.get("/v1/samples", headers=me).json()["items"] == []


def test_callers_without_a_valid_token_share_their_address_bucket(
    sec_stack: SecurityStack, tight: Any
) -> None:
    client, _ = tight("registry", rate=1, burst=3)
    for headers in (
        {},
        {"Authorization": "Bearer garbage"},
        sec_stack.headers("licensee", "x", audience="other"),
    ):
        assert_problem(client.get("/v1/licenses", headers=headers), 401)
    # The fourth unauthenticated request is refused before its token is even looked at.
    assert_429(client.get("/v1/licenses"), retry_after=1)
    # A caller with a valid token from the same address has its own bucket.
    assert client.get("/v1/licenses", headers=sec_stack.headers("licensee", "lic_rlok")).status_code == 200


def test_forged_tokens_cannot_drain_someone_elses_bucket(sec_stack: SecurityStack, tight: Any) -> None:
    from support.security import bad_token_headers

    client, _ = tight("worker", rate=1, burst=3)
    victim = "lic_rlvictim"
    for _ in range(5):  # forged tokens in the victim's name count against the sender's address
        client.get(
            "/v1/notices", headers=bad_token_headers(sec_stack, "forged-signature", "licensee", victim)
        )
    for _ in range(3):
        assert client.get("/v1/notices", headers=sec_stack.headers("licensee", victim)).status_code == 200


def test_probes_and_metrics_are_not_limited_but_operators_are(sec_stack: SecurityStack, tight: Any) -> None:
    client, _ = tight("worker", rate=1, burst=2)
    for _ in range(3):
        client.get("/v1/notices")
    assert_429(client.get("/v1/notices"), retry_after=1)
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)
        assert client.get("/metrics").status_code == 200
    # An operator is a caller like any other: a leaked operator token cannot hammer an API.
    ops = sec_stack.headers("operator", "ops")
    for _ in range(2):
        assert client.get("/v1/operator/notices", headers=ops).status_code == 200
    assert_429(client.get("/v1/operator/notices", headers=ops), retry_after=1)


def test_only_the_pipelines_scoped_lookups_are_not_limited(sec_stack: SecurityStack, tight: Any) -> None:
    """The worker's and consent-api's service tokens on POST /v1/holders (their one call) are never
    throttled: that would throttle revocations. The same tokens anywhere else, and operators on the
    same call, are."""
    client, _ = tight("registry", rate=1, burst=2)
    aud = sec_stack.audience("registry")
    unknown = {"sample_ids": [new_id("smp")]}
    for sub, scope, view in (
        ("revocation-worker", "holders", "licenses"),
        ("consent-api", "recipients", "samples"),
    ):
        service = sec_stack.headers("service", sub, audience=aud, scopes=(scope,))
        for _ in range(5):
            r = client.post("/v1/holders", json={**unknown, "view": view}, headers=service)
            assert r.status_code == 200, r.text
        # Elsewhere (refused anyway) it counts like anyone: two 403s, then 429.
        for _ in range(2):
            assert_problem(client.get("/v1/licenses", headers=service), 403)
        assert_429(client.get("/v1/licenses", headers=service), retry_after=1)
    ops = sec_stack.headers("operator", "ops")
    for _ in range(2):
        assert client.post("/v1/holders", json=unknown, headers=ops).status_code == 200
    assert_429(client.post("/v1/holders", json=unknown, headers=ops), retry_after=1)


def test_rate_limit_settings(sec_stack: SecurityStack, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = RescindSettings()
    assert (defaults.rate_limit_per_second, defaults.rate_limit_burst) == (100.0, 1000)
    monkeypatch.setenv("RESCIND_RATE_LIMIT_PER_SECOND", "5")
    monkeypatch.setenv("RESCIND_RATE_LIMIT_BURST", "7")
    app = create_worker_app(
        WorkerSettings(worker_database_url=sec_stack.urls["worker"], state_dir=sec_stack.state_dir)
    )
    limiter = app.state.rate_limiter
    assert (limiter.rate, limiter.burst) == (5.0, 7.0)
    app.state.ctx.engine.dispose()
    for off in ({"rate_limit_per_second": 0}, {"rate_limit_burst": 0}):
        app = limited_app(sec_stack, "registry", **off)
        assert getattr(app.state, "rate_limiter", None) is None
        app.state.ctx.engine.dispose()
