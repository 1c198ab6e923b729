"""The authorization matrix: every endpoint of every service x every role (subject, licensee,
operator, service, none) x own / foreign / missing ids.

- A `service` token (one Rescind service calling another) is let in by its scope alone: with no
  scope, or with every scope but the one an endpoint takes, it gets 403 everywhere; with that scope
  it gets the one call it exists for (the registry's holders lookup) and nothing else. A token for
  one service's audience is refused by the others (401).

- Every route of every app must have an entry here (or be listed as public): a new endpoint cannot be
  forgotten.
- Protected endpoints: no token, garbage, forged, tampered, alg=none, HS256 keyed with the public key,
  expired, wrong audience, wrong issuer, unknown role, no subject -> 401 problem JSON with
  WWW-Authenticate; a role not allowed -> 403; each allowed role succeeds on its own records.
- A tenant (subject or licensee) naming another tenant's record gets the same 404 as for an id that
  does not exist (same status, type, title and detail but for the id), and the record is unchanged.
- Lists never show another tenant's records; ids carried in bodies and queries do not cross tenants.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Route

from support.helpers import assert_problem, sha
from support.security import (
    ALL_SCOPES,
    BAD_TOKEN_KINDS,
    ROLES,
    TENANT_ROLES,
    ConsentWorld,
    RegistryWorld,
    SecurityStack,
    World,
    bad_token_headers,
)

Body = Callable[[Any, str], Any]  # (world, tenant) -> JSON body


@dataclass(frozen=True)
class Op:
    service: str
    method: str
    path: str
    roles: tuple[str, ...]  # who may call it
    ok: tuple[int, ...] = (200,)
    kind: str | None = None  # the tenant record named by the path's one parameter
    fresh: bool = False  # a successful call uses the record up: give each call a new one
    body: Body | None = None
    query: dict[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()  # the scopes that let a service token in (role "service")

    @property
    def id(self) -> str:
        return f"{self.service} {self.method} {self.path}"

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD")

    def url(self, record_id: str | None) -> str:
        return re.sub(r"\{[^}]+\}", record_id or "", self.path) if self.kind else self.path


SUBJECT = ("subject",)
LICENSEE = ("licensee",)
OPERATOR = ("operator",)
LICENSEE_OR_OPERATOR = ("licensee", "operator")


def _sample_body(world: Any, tenant: str) -> dict[str, Any]:
    return {"kind": "voice_recording", "sha256": sha("matrix"), "media_type": "audio/wav"}


MATRIX: list[Op] = [
    # consent-api: sellers (subjects) only, operators for the audit chain.
    Op("consent", "POST", "/v1/samples", SUBJECT, (201,), body=_sample_body),
    Op(
        "consent",
        "POST",
        "/v1/samples/batch",
        SUBJECT,
        (201,),
        body=lambda w, t: {"samples": [_sample_body(w, t)]},
    ),
    Op("consent", "GET", "/v1/samples", SUBJECT),
    Op("consent", "GET", "/v1/samples/{sample_id}", SUBJECT, kind="sample"),
    Op(
        "consent",
        "POST",
        "/v1/consents",
        SUBJECT,
        (201,),
        body=lambda w, t: {"sample_ids": [w.record("sample", t)], "purposes": ["evaluation"]},
    ),
    Op("consent", "GET", "/v1/consents", SUBJECT),
    Op("consent", "GET", "/v1/consents/{consent_id}", SUBJECT, kind="consent"),
    Op("consent", "POST", "/v1/consents/{consent_id}/revoke", SUBJECT, (202,), kind="consent", fresh=True),
    Op(
        "consent",
        "POST",
        "/v1/revocations",
        SUBJECT,
        (202,),
        body=lambda w, t: {"scope": "purpose", "purpose": "synthetic_media"},
    ),
    Op("consent", "GET", "/v1/revocations", SUBJECT),
    Op("consent", "GET", "/v1/revocations/{revocation_id}", SUBJECT, kind="revocation"),
    # The signed proof: the seller's own; an operator (auditor, regulator request) any.
    Op(
        "consent",
        "GET",
        "/v1/revocations/{revocation_id}/proof",
        ("subject", "operator"),
        kind="revocation",
    ),
    Op("consent", "POST", "/v1/rights-requests", SUBJECT, (201,), body=lambda w, t: {"type": "access"}),
    Op("consent", "GET", "/v1/rights-requests", SUBJECT),
    Op("consent", "GET", "/v1/rights-requests/{request_id}", SUBJECT, kind="rights_request"),
    Op("consent", "GET", "/v1/rights-requests/{request_id}/export", SUBJECT, kind="rights_request"),
    Op("consent", "PUT", "/v1/profile", SUBJECT, body=lambda w, t: {"display_name": f"tenant {t}"}),
    Op("consent", "GET", "/v1/profile", SUBJECT),
    Op("consent", "GET", "/v1/audit/verify", OPERATOR),
    Op("consent", "GET", "/v1/audit/entries", OPERATOR, query={"subject_id": "sub_nobody"}),
    Op("consent", "GET", "/v1/audit/heads", OPERATOR),
    Op("consent", "GET", "/v1/audit/checkpoints", OPERATOR),
    # registry: operators run it; licensees see their own licenses and models; subjects never.
    Op("registry", "POST", "/v1/licensees", OPERATOR, (201,), body=lambda w, t: {"name": "Matrix Inc"}),
    Op("registry", "GET", "/v1/licensees", OPERATOR),
    Op("registry", "GET", "/v1/licensees/{licensee_id}", LICENSEE_OR_OPERATOR, kind="licensee"),
    Op("registry", "POST", "/v1/licenses", OPERATOR, (200, 201), body=lambda w, t: w.license_body(t)),
    Op("registry", "GET", "/v1/licenses", LICENSEE_OR_OPERATOR),
    Op("registry", "GET", "/v1/licenses/{license_id}", LICENSEE_OR_OPERATOR, kind="license"),
    Op("registry", "GET", "/v1/licenses/{license_id}/samples", LICENSEE_OR_OPERATOR, kind="license"),
    Op("registry", "POST", "/v1/models", LICENSEE, (201,), body=lambda w, t: w.model_body(t)),
    Op("registry", "GET", "/v1/models", LICENSEE_OR_OPERATOR),
    Op("registry", "GET", "/v1/models/{model_id}", LICENSEE_OR_OPERATOR, kind="model"),
    Op("registry", "GET", "/v1/audit/entries", OPERATOR),
    Op("registry", "GET", "/v1/audit/heads", OPERATOR),
    Op("registry", "GET", "/v1/audit/checkpoints", OPERATOR),
    Op("registry", "GET", "/v1/audit/verify", OPERATOR),
    # The default view (samples) is consent-api's recipients lookup; the worker's view: below.
    Op(
        "registry",
        "POST",
        "/v1/holders",
        ("operator", "service"),
        body=lambda w, t: {"sample_ids": w.samples_of[t]},
        scopes=("recipients",),
    ),
    # revocation-worker: licensees manage their endpoints and notices; operators the backlog.
    Op("worker", "POST", "/v1/endpoints", LICENSEE, (201,), body=lambda w, t: {"url": w.URL}),
    Op("worker", "GET", "/v1/endpoints", LICENSEE),
    Op("worker", "GET", "/v1/endpoints/{endpoint_id}", LICENSEE, kind="endpoint"),
    Op("worker", "DELETE", "/v1/endpoints/{endpoint_id}", LICENSEE, (204,), kind="endpoint", fresh=True),
    Op("worker", "POST", "/v1/endpoints/{endpoint_id}/rotate-secret", LICENSEE, kind="endpoint"),
    Op("worker", "POST", "/v1/endpoints/{endpoint_id}/enable", LICENSEE, kind="endpoint"),
    Op("worker", "GET", "/v1/operator/endpoints", OPERATOR),
    Op("worker", "GET", "/v1/notices", LICENSEE),
    Op("worker", "GET", "/v1/notices/{notice_id}", LICENSEE, kind="notice"),
    Op("worker", "GET", "/v1/notices/{notice_id}/samples", LICENSEE, kind="notice"),
    Op(
        "worker",
        "POST",
        "/v1/notices/{notice_id}/ack",
        LICENSEE,
        kind="notice",
        fresh=True,
        body=lambda w, t: {"status": "completed", "evidence": {"job": "matrix"}},
    ),
    Op("worker", "POST", "/v1/ack-keys", LICENSEE, (201,), body=lambda w, t: w.ack_key_body()),
    Op("worker", "GET", "/v1/ack-keys", LICENSEE),
    Op("worker", "GET", "/v1/ack-keys/{key_id}", LICENSEE, kind="ack_key"),
    Op("worker", "DELETE", "/v1/ack-keys/{key_id}", LICENSEE, (204,), kind="ack_key", fresh=True),
    # A licensee's deadline policy: the operator's alone (the path names the licensee, no tenant's record).
    Op("worker", "GET", "/v1/licensees/{licensee_id}/policy", OPERATOR, kind="licensee_policy"),
    Op(
        "worker",
        "PUT",
        "/v1/licensees/{licensee_id}/policy",
        OPERATOR,
        kind="licensee_policy",
        body=lambda w, t: {"deadline_months": 2},
    ),
    Op("worker", "POST", "/v1/notices/{notice_id}/redeliver", LICENSEE, (202,), kind="notice", fresh=True),
    Op("worker", "GET", "/v1/operator/dead-letters", OPERATOR),
    Op(
        "worker",
        "POST",
        "/v1/operator/dead-letters/redrive",
        OPERATOR,
        body=lambda w, t: {"licensee_id": w.subs[t]},
    ),
    Op("worker", "GET", "/v1/operator/notices", OPERATOR),
    Op("worker", "GET", "/v1/audit/entries", OPERATOR),
    Op("worker", "GET", "/v1/audit/heads", OPERATOR),
    Op("worker", "GET", "/v1/audit/checkpoints", OPERATOR),
    Op("worker", "GET", "/v1/audit/verify", OPERATOR),
]

# Reachable without a token, on purpose.
PUBLIC_COMMON = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
PUBLIC: dict[str, set[tuple[str, str]]] = {
    "consent": PUBLIC_COMMON | {("GET", "/.well-known/jwks.json")},
    "registry": PUBLIC_COMMON | {("GET", "/.well-known/jwks.json")},
    "worker": PUBLIC_COMMON | {("GET", "/.well-known/jwks.json")},
}
SERVICES = ("consent", "registry", "worker")
PROTECTED = [pytest.param(op, id=op.id) for op in MATRIX]
# Records a tenant owns (an operator-only path names no tenant's record).
OWNED = [pytest.param(op, id=op.id) for op in MATRIX if op.kind and set(op.roles) & set(TENANT_ROLES)]
PUBLIC_PARAMS = [
    pytest.param(service, method, path, id=f"{service} {method} {path}")
    for service in SERVICES
    for method, path in sorted(PUBLIC[service])
]


def _routes(stack: SecurityStack, service: str) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, included routers flattened."""
    out: set[tuple[str, str]] = set()
    for route in iter_route_contexts(stack.app(service).routes):
        original = route.original_route
        assert isinstance(original, APIRoute | Route), f"{service}: unexpected route {original!r}"
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette answers HEAD for every GET route
        assert route.path and methods, f"{service}: route without path or methods: {original!r}"
        out |= {(m, route.path) for m in methods}
    return out


def call(world: World, op: Op, headers: dict[str, str], record_id: str | None, tenant: str = "a") -> Any:
    body = op.body(world, tenant) if op.body else None
    return world.client.request(
        op.method, op.url(record_id), json=body, params=op.query or None, headers=headers
    )


def assert_401(r: Any) -> None:
    body = assert_problem(r, 401)
    assert body["type"].endswith("/unauthorized"), body
    assert r.headers["www-authenticate"].lower().startswith("bearer"), r.headers


# -- completeness ------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_endpoint_has_a_matrix_entry(sec_stack: SecurityStack, service: str) -> None:
    routes = _routes(sec_stack, service)
    listed = {(op.method, op.path) for op in MATRIX if op.service == service} | PUBLIC[service]
    assert routes - listed == set(), f"{service}: endpoints without an authorization matrix entry"
    assert listed - routes == set(), f"{service}: matrix entries for endpoints that do not exist"
    # The OpenAPI document describes no endpoint that the matrix does not know either.
    spec = sec_stack.client(service).get("/openapi.json").json()
    documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert documented <= listed, documented - listed


def test_matrix_entries_are_unique_and_sane() -> None:
    keys = [(op.service, op.method, op.path) for op in MATRIX]
    assert len(keys) == len(set(keys))
    for op in MATRIX:
        assert set(op.roles) <= set(ROLES), op
        assert ("{" in op.path) == (op.kind is not None), op
        assert ("service" in op.roles) == bool(op.scopes), op
        assert set(op.scopes) <= set(ALL_SCOPES), op


# -- public endpoints ------------------------------------------------------------------


@pytest.mark.parametrize(("service", "method", "path"), PUBLIC_PARAMS)
def test_public_endpoints_need_no_token(
    sec_stack: SecurityStack, service: str, method: str, path: str
) -> None:
    client = sec_stack.client(service)
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, sec_stack.headers("subject", "someone")):
        r = client.request(method, path, headers=headers)
        if path == "/readyz":
            # No broker in these tests: not ready, but never an auth answer.
            assert r.status_code in (200, 503), r.text
        else:
            assert r.status_code == 200, (path, r.status_code, r.text[:200])


# -- 401: no usable token ----------------------------------------------------------------


@pytest.mark.parametrize("op", PROTECTED)
def test_bad_tokens_are_401_on_every_protected_endpoint(
    sec_stack: SecurityStack, sec_worlds: dict[str, World], op: Op
) -> None:
    world = sec_worlds[op.service]
    record = world.record(op.kind, "a") if op.kind else None
    failures = []
    for role in {op.roles[0], *(r for r in op.roles if r == "service")}:
        for kind in BAD_TOKEN_KINDS:
            headers = bad_token_headers(
                sec_stack, kind, role, world.sub(role, "a"), service=op.service, scopes=op.scopes
            )
            r = call(world, op, headers, record)
            try:
                assert_401(r)
            except (AssertionError, KeyError) as exc:
                failures.append(f"{role} {kind}: {r.status_code} {r.text[:200]} ({exc})")
    assert not failures, "\n".join(failures)


# -- 403: a role that is not allowed ------------------------------------------------------


@pytest.mark.parametrize("op", PROTECTED)
def test_wrong_role_is_403(sec_worlds: dict[str, World], op: Op) -> None:
    world = sec_worlds[op.service]
    record = world.record(op.kind, "a") if op.kind else None
    before = world.snapshot(op.kind, record) if op.kind and op.writes else None
    for role in set(ROLES) - set(op.roles) - {"service"}:
        # The caller even carries tenant a's own id as its `sub`: the role alone decides.
        for sub in (world.sub(role, "a"), world.subs["a"]):
            r = call(world, op, world.stack.headers(role, sub), record)
            body = assert_problem(r, 403)
            assert body["type"].endswith("/forbidden"), body
    # A service token for this very service: with no scope, and with every scope but the ones this
    # endpoint takes (the worker's and consent-api's tokens on audit entries, licenses, dead letters).
    aud = world.stack.audience(op.service)
    wrong_scopes = tuple(s for s in ALL_SCOPES if s not in op.scopes)
    for scopes in {(), wrong_scopes}:
        for sub in ("revocation-worker", "consent-api", world.subs["a"]):
            r = call(world, op, world.stack.headers("service", sub, audience=aud, scopes=scopes), record)
            body = assert_problem(r, 403)
            assert body["type"].endswith("/forbidden"), (scopes, body)
    if op.kind and op.writes:
        assert world.snapshot(op.kind, record) == before


# -- each allowed role succeeds on its own records -----------------------------------------


@pytest.mark.parametrize("op", PROTECTED)
def test_allowed_roles_succeed_on_own_records(sec_worlds: dict[str, World], op: Op) -> None:
    """The control for every refusal above: the same call works for the right caller."""
    world = sec_worlds[op.service]
    for role in op.roles:
        record = world.record(op.kind, "a", fresh=op.fresh) if op.kind else None
        r = call(world, op, world.headers(role, "a", scopes=op.scopes), record)
        assert r.status_code in op.ok, (role, r.status_code, r.text[:300])


@pytest.mark.parametrize(
    ("view", "scope"), [("licenses", "holders"), ("samples", "recipients")], ids=["worker", "consent-api"]
)
def test_each_service_scope_opens_its_own_holders_view_only(
    sec_worlds: dict[str, World], view: str, scope: str
) -> None:
    """The worker's scope (holders) reads the licenses view, consent-api's (recipients) the samples
    view; each is refused the other's, and a registry token is refused by the other services."""
    w = sec_worlds["registry"]
    assert isinstance(w, RegistryWorld)
    body = {"sample_ids": w.samples_of["a"], "view": view}
    r = w.client.post("/v1/holders", json=body, headers=w.headers("service", scopes=(scope,)))
    assert r.status_code == 200, r.text
    assert w.subs["a"] in r.text  # the real answer: tenant a's licensee holds these samples
    (other,) = set(ALL_SCOPES) - {scope}
    r = w.client.post("/v1/holders", json=body, headers=w.headers("service", scopes=(other,)))
    assert assert_problem(r, 403)["type"].endswith("/forbidden")
    # The same token (the registry's audience) at consent-api and revocation-worker: 401.
    token = w.headers("service", scopes=(scope,))
    for service, path in (("consent", "/v1/audit/entries"), ("worker", "/v1/operator/dead-letters")):
        assert_401(sec_worlds[service].client.get(path, params={"subject_id": "sub_x"}, headers=token))


# -- foreign ids: 404, exactly like a missing id ------------------------------------------


def _comparable(r: Any, record_id: str) -> tuple[int, str, str]:
    """The answer with the id asked about blanked out: what must not differ between a foreign id and
    a missing one."""
    return r.status_code, r.headers["content-type"], r.text.replace(record_id, "<id>")


@pytest.mark.parametrize("op", OWNED)
def test_foreign_id_is_404_like_a_missing_one(sec_worlds: dict[str, World], op: Op) -> None:
    world = sec_worlds[op.service]
    assert op.kind is not None
    roles = [r for r in op.roles if r in TENANT_ROLES]
    assert roles, "every record named in a path belongs to a tenant"
    for role in roles:
        theirs = world.record(op.kind, "a", fresh=op.fresh)
        missing = world.missing(op.kind)
        before = world.snapshot(op.kind, theirs)
        foreign = call(world, op, world.headers(role, "b"), theirs, tenant="b")
        absent = call(world, op, world.headers(role, "b"), missing, tenant="b")
        assert_problem(foreign, 404)
        assert_problem(absent, 404)
        assert _comparable(foreign, theirs) == _comparable(absent, missing), (foreign.text, absent.text)
        # No cross-tenant write: the record is exactly as it was.
        assert world.snapshot(op.kind, theirs) == before
        # The owner still gets it (the 404 was about the caller, not the record).
        if not op.writes:
            r = call(world, op, world.headers(role, "a"), theirs)
            assert r.status_code in op.ok, r.text


# -- lists and ids in bodies or queries never cross tenants ----------------------------------


LISTS = [pytest.param(op, id=op.id) for op in MATRIX if op.method == "GET" and not op.kind]


@pytest.mark.parametrize("op", LISTS)
def test_lists_never_show_another_tenants_records(sec_worlds: dict[str, World], op: Op) -> None:
    world = sec_worlds[op.service]
    for role in (r for r in op.roles if r in TENANT_ROLES):
        for me, other in (("a", "b"), ("b", "a")):
            r = call(world, op, world.headers(role, me), None, tenant=me)
            assert r.status_code == 200, r.text
            leaked = {i for i in world.private_ids(other) if i in r.text}
            assert not leaked, (role, me, leaked)


def test_subject_cannot_use_another_subjects_samples(sec_worlds: dict[str, World]) -> None:
    w = sec_worlds["consent"]
    assert isinstance(w, ConsentWorld)
    theirs, missing = w.record("sample", "a"), w.missing("sample")
    consent = w.record("consent", "a")
    before = w.snapshot("consent", consent)
    attempts = [
        ("/v1/consents", lambda s: {"sample_ids": [s], "purposes": ["model_training"]}),
        ("/v1/revocations", lambda s: {"scope": "samples", "sample_ids": [s]}),
    ]
    for path, body in attempts:
        foreign = w.client.post(path, json=body(theirs), headers=w.h("b"))
        absent = w.client.post(path, json=body(missing), headers=w.h("b"))
        assert 400 <= foreign.status_code < 500, foreign.text
        assert _comparable(foreign, theirs) == _comparable(absent, missing)
    assert w.snapshot("consent", consent) == before
    # Revoking another subject's consent by scope "all" touches only the caller's own.
    r = w.client.post("/v1/revocations", json={"scope": "all"}, headers=w.headers("subject", "b"))
    assert r.status_code == 202
    assert w.snapshot("consent", consent)[1]["status"] == "active"


def test_licensee_cannot_use_another_licensees_licenses(sec_worlds: dict[str, World]) -> None:
    w = sec_worlds["registry"]
    assert isinstance(w, RegistryWorld)
    theirs, missing = w.record("license", "a"), w.missing("license")
    body = {"name": "stolen", "version": "1"}
    foreign = w.client.post("/v1/models", json={**body, "license_ids": [theirs]}, headers=w.h("b"))
    absent = w.client.post("/v1/models", json={**body, "license_ids": [missing]}, headers=w.h("b"))
    assert 400 <= foreign.status_code < 500, foreign.text
    assert _comparable(foreign, theirs) == _comparable(absent, missing)
    shard = {**body, "shards": [{"shard_id": "s1", "license_ids": [theirs]}]}
    r = w.client.post("/v1/models", json=shard, headers=w.h("b"))
    assert 400 <= r.status_code < 500, r.text
    # Query filters naming another licensee show nothing.
    for path in ("/v1/licenses", "/v1/models"):
        r = w.client.get(path, params={"licensee_id": w.subs["a"]}, headers=w.h("b"))
        assert r.status_code == 200 and r.json()["items"] == [], r.text


def test_acknowledging_with_another_licensees_models_is_refused(sec_worlds: dict[str, World]) -> None:
    w = sec_worlds["worker"]
    theirs = w.record("notice", "a")
    their_models = [
        m["model_id"]
        for m in w.client.get(f"/v1/notices/{theirs}", headers=w.headers("licensee", "a")).json()["models"]
    ]
    mine = w.record("notice", "b", fresh=True)
    body = {"status": "completed", "models": [{"model_id": their_models[0], "action": "unlearned"}]}
    r = w.client.post(f"/v1/notices/{mine}/ack", json=body, headers=w.headers("licensee", "b"))
    assert_problem(r, 422, "body.models[0].model_id")
