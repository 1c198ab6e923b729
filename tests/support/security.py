"""Security-test fixtures: the three services on databases of their own (PostgreSQL, then SQLite),
with records owned by two tenants of each kind, tokens of every role, and the bad tokens an attacker
would try.

Own databases: these tests redrive dead letters, fuzz operator endpoints and leave odd records
behind; none of that may reach the other suites' shared databases (or their delivery loops).

The fixtures (`sec_backend`, `sec_stack`, `sec_worlds`) are in tests/common/conftest.py.
"""

from __future__ import annotations

import abc
import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from consent_api.main import create_app as create_consent_app
from consent_api.migrate import upgrade as upgrade_consent
from registry.main import create_app as create_registry_app
from rescind_common.auth import ServiceScope, ensure_dev_key, mint_token
from rescind_common.db import make_engine, make_session_factory
from rescind_common.ids import new_id
from rescind_common.settings import RescindSettings
from revocation_worker.ackkeys.models import AckKey
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.migrate import upgrade as upgrade_worker
from revocation_worker.notices.models import Delivery, Notice
from revocation_worker.policy.models import LicenseePolicy

from support.helpers import make_settings, sha
from support.registry import Projection, make_registry_settings, new_registry_db
from support.worker import WorkerHarness

ROLES = ("subject", "licensee", "operator", "service")
TENANT_ROLES = ("subject", "licensee")  # roles whose records belong to one caller
SERVICES = ("consent", "registry", "worker")
# The service names the settings know them by (their audiences: RescindSettings.audience_of).
SERVICE_NAMES = {"consent": "consent-api", "registry": "registry", "worker": "revocation-worker"}
ALL_SCOPES = tuple(s.value for s in ServiceScope)

# Rate limiting off in the shared stack: the matrix and the fuzzer send hundreds of requests per caller
# on purpose. A license naming an unknown consent waits this long for the projection (fuzzing does).
# Rate limits off (the fuzzer and the matrix make thousands of calls per tenant, endpoint registrations
# included); tests/common/test_limits.py and the worker's own tests cover them.
STACK_SETTINGS: dict[str, Any] = {
    "rate_limit_per_second": 0,
    "registry_projection_wait_seconds": 0.05,
    "worker_redeliver_per_minute": 60_000.0,
    "worker_redeliver_burst": 100_000,
    "worker_max_endpoints_per_licensee": 10_000,
}


# -- the stack -------------------------------------------------------------------------


class SecurityStack:
    """consent-api, registry and revocation-worker as ASGI apps (TestClient) on fresh databases.

    `overrides` are settings for all three (each service ignores the others' fields)."""

    def __init__(self, backend: str, urls: dict[str, str], state_dir: Path, **overrides: Any) -> None:
        self.backend = backend
        self.urls = urls
        self.state_dir = state_dir
        self.auth = RescindSettings(state_dir=state_dir)
        self.key = ensure_dev_key(self.auth.dev_auth_key_file)
        self.consent_app = create_consent_app(make_settings(urls["consent"], state_dir, **overrides))
        self.registry_settings = make_registry_settings(urls["registry"], state_dir, **overrides)
        self.registry_app = create_registry_app(self.registry_settings)
        self.worker = WorkerHarness(urls["worker"], state_dir, **overrides)
        self.consent = TestClient(self.consent_app)
        self.registry = TestClient(self.registry_app)
        self._registry_engine = make_engine(urls["registry"], pool_size=2)
        self.projection = Projection(make_session_factory(self._registry_engine))

    def __enter__(self) -> SecurityStack:
        self.consent.__enter__()
        self.registry.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.consent.__exit__(None, None, None)
        self.registry.__exit__(None, None, None)
        self.worker.close()
        self._registry_engine.dispose()

    def app(self, service: str) -> FastAPI:
        return {"consent": self.consent_app, "registry": self.registry_app, "worker": self.worker.app}[
            service
        ]

    def client(self, service: str) -> TestClient:
        return {"consent": self.consent, "registry": self.registry, "worker": self.worker.client}[service]

    def audience(self, service: str) -> str:
        return self.auth.audience_of(SERVICE_NAMES[service])

    def token(self, role: str, sub: str, **kwargs: Any) -> str:
        """A person's token carries every service's audience (as `rescind token` mints them); pass
        `audience` (and `scopes`) for a service token."""
        return mint_token(
            self.key,
            sub=sub,
            role=role,
            issuer=kwargs.pop("issuer", self.auth.auth_issuer),
            audience=kwargs.pop("audience", self.auth.token_audiences),
            **kwargs,
        )

    def headers(self, role: str, sub: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, sub, **kwargs)}"}


def build_stack(
    backend: str,
    pg_database: Callable[[str], str],
    tmp: Path,
    state_dir: Path,
    **overrides: Any,
) -> SecurityStack:
    """Fresh, migrated databases for the three services on `backend`, and the apps on them."""
    if backend == "postgresql":
        urls = {"consent": pg_database("sec_consent"), "worker": pg_database("sec_worker")}
    else:
        urls = {"consent": f"sqlite:///{tmp / 'consent.db'}", "worker": f"sqlite:///{tmp / 'worker.db'}"}
    upgrade_consent(urls["consent"])
    upgrade_worker(urls["worker"])
    urls["registry"] = new_registry_db(backend, pg_database, tmp)
    return SecurityStack(backend, urls, state_dir, **overrides)


# -- bad tokens ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(stack: SecurityStack, role: str, sub: str, **over: Any) -> dict[str, Any]:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims: dict[str, Any] = {
        "sub": sub,
        "role": role,
        "iss": stack.auth.auth_issuer,
        "aud": stack.auth.token_audiences,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(over)
    return claims


def _raw(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    h = _b64(json.dumps(header, separators=(",", ":")).encode())
    p = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}.{_b64(signature)}"


def _hs256_with_public_key(stack: SecurityStack, claims: dict[str, Any]) -> str:
    """Algorithm confusion: the ES256 public key (PEM) used as an HMAC secret."""
    secret = stack.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


def _tampered(stack: SecurityStack, role: str, sub: str) -> str:
    """A real token whose `sub` was changed after signing."""
    header, payload, sig = stack.token(role, sub).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"


BAD_TOKEN_KINDS = (
    "no-token",
    "empty-bearer",
    "basic-scheme",
    "garbage",
    "forged-signature",
    "tampered-payload",
    "alg-none",
    "hs256-with-public-key",
    "expired",
    "wrong-audience",
    "wrong-issuer",
    "unknown-role",
    "no-subject",
    "another-services-audience",
)


def bad_token_headers(
    stack: SecurityStack,
    kind: str,
    role: str,
    sub: str,
    service: str = "consent",
    scopes: tuple[str, ...] = (),
) -> dict[str, str]:
    """Headers carrying a token of `kind` that must be refused with 401 by `service`. Everything but
    the defect is right: the claims name `role`, `sub` (and `scopes`), a caller who would otherwise
    be let in, and the audience is `service`'s (all of them for a person's token)."""
    bearer = "Bearer "
    aud = stack.audience(service) if role == "service" else stack.auth.token_audiences
    if kind == "another-services-audience":
        others = [stack.audience(o) for o in SERVICES if o != service]
        return stack.headers(role, sub, audience=others, scopes=scopes)
    if kind in ("expired", "wrong-audience", "wrong-issuer"):
        over: dict[str, Any] = {"audience": aud, "scopes": scopes}
        if kind == "expired":
            return stack.headers(role, sub, ttl=dt.timedelta(minutes=-10), **over)
        if kind == "wrong-audience":
            return stack.headers(role, sub, **{**over, "audience": "some-other-api"})
        return stack.headers(role, sub, issuer="https://evil.example", **over)
    if kind == "no-token":
        return {}
    if kind == "empty-bearer":
        return {"Authorization": "Bearer "}
    if kind == "basic-scheme":
        return {"Authorization": "Basic " + base64.b64encode(f"{sub}:x".encode()).decode()}
    if kind == "garbage":
        return {"Authorization": bearer + "not.a.jwt"}
    if kind == "forged-signature":
        attacker = ec.generate_private_key(ec.SECP256R1())
        return {"Authorization": bearer + jwt.encode(_claims(stack, role, sub), attacker, algorithm="ES256")}
    if kind == "tampered-payload":
        return {"Authorization": bearer + _tampered(stack, role, sub)}
    if kind == "alg-none":
        return {"Authorization": bearer + _raw({"alg": "none", "typ": "JWT"}, _claims(stack, role, sub))}
    if kind == "hs256-with-public-key":
        return {"Authorization": bearer + _hs256_with_public_key(stack, _claims(stack, role, sub))}
    if kind == "unknown-role":
        claims = _claims(stack, "admin", sub)
        return {"Authorization": bearer + jwt.encode(claims, stack.key, algorithm="ES256")}
    if kind == "no-subject":
        claims = _claims(stack, role, sub)
        del claims["sub"]
        return {"Authorization": bearer + jwt.encode(claims, stack.key, algorithm="ES256")}
    raise ValueError(kind)


# -- worlds: records owned by tenant "a" and tenant "b" of each service ------------------


def _ok(r: Any, *codes: int) -> Any:
    assert r.status_code in (codes or (200, 201, 202)), r.text
    return r.json()


class World(abc.ABC):
    """One service with two tenants, "a" and "b", each owning records of every kind."""

    service: str
    tenant_role: str | None  # subject or licensee; None: nobody owns records here by token

    def __init__(self, stack: SecurityStack) -> None:
        self.stack = stack
        self.client = stack.client(self.service)
        self.subs = {t: f"sec-{t}-{uuid.uuid4().hex[:10]}" for t in "ab"}
        self.records: dict[tuple[str, str], str] = {}

    def sub(self, role: str, tenant: str) -> str:
        if role == "operator":
            return "sec-ops"
        if role == "service":
            return "revocation-worker"  # a service's `sub` is its name
        if role == self.tenant_role:
            return self.subs[tenant]
        return f"sec-{role}-{tenant}"

    def headers(self, role: str, tenant: str = "a", scopes: tuple[str, ...] = ()) -> dict[str, str]:
        """A person's token (every audience), or a service token for this service with `scopes`."""
        if role == "service":
            aud = self.stack.audience(self.service)
            return self.stack.headers(role, self.sub(role, tenant), audience=aud, scopes=scopes)
        return self.stack.headers(role, self.sub(role, tenant))

    def record(self, kind: str, tenant: str = "a", fresh: bool = False) -> str:
        """The id of a record of `kind` owned by `tenant`; `fresh`: a new one, for calls that use it up."""
        if fresh:
            return self.make(kind, tenant)
        if (kind, tenant) not in self.records:
            self.records[(kind, tenant)] = self.make(kind, tenant)
        return self.records[(kind, tenant)]

    def missing(self, kind: str) -> str:
        """An id shaped like a real record of `kind` that nobody owns."""
        return new_id(self.record(kind, "a").split("_", 1)[0])

    def private_ids(self, tenant: str) -> set[str]:
        """Ids only `tenant` (and operators) may ever see."""
        return {v for (_, t), v in self.records.items() if t == tenant}

    @abc.abstractmethod
    def make(self, kind: str, tenant: str) -> str:
        """Create a record of `kind` owned by `tenant`; return its id."""

    @abc.abstractmethod
    def snapshot(self, kind: str, record_id: str) -> Any:
        """The record as its owner sees it (or as stored): compared before and after an attack."""


class ConsentWorld(World):
    service = "consent"
    tenant_role = "subject"
    KINDS = ("sample", "consent", "revocation", "rights_request")

    def __init__(self, stack: SecurityStack) -> None:
        super().__init__(stack)
        for t in "ab":
            for kind in self.KINDS:
                self.record(kind, t)
            r = self.client.put("/v1/profile", json={"display_name": f"tenant {t}"}, headers=self.h(t))
            _ok(r, 200)

    def h(self, tenant: str) -> dict[str, str]:
        return self.headers("subject", tenant)

    def sample(self, tenant: str) -> str:
        body = {"kind": "face_image", "sha256": sha(tenant)}
        return str(_ok(self.client.post("/v1/samples", json=body, headers=self.h(tenant)), 201)["id"])

    def make(self, kind: str, tenant: str) -> str:
        h = self.h(tenant)
        if kind == "sample":
            return self.sample(tenant)
        if kind == "consent":
            body = {"sample_ids": [self.sample(tenant)], "purposes": ["model_training"]}
            return str(_ok(self.client.post("/v1/consents", json=body, headers=h), 201)["id"])
        if kind == "revocation":
            consent = self.make("consent", tenant)
            return str(_ok(self.client.post(f"/v1/consents/{consent}/revoke", headers=h), 202)["id"])
        if kind == "rights_request":
            r = self.client.post("/v1/rights-requests", json={"type": "access"}, headers=h)
            return str(_ok(r, 201)["id"])
        raise ValueError(kind)

    PATHS = {
        "sample": "/v1/samples/{}",
        "consent": "/v1/consents/{}",
        "revocation": "/v1/revocations/{}",
        "rights_request": "/v1/rights-requests/{}",
    }

    def snapshot(self, kind: str, record_id: str) -> Any:
        for t in "ab":
            r = self.client.get(self.PATHS[kind].format(record_id), headers=self.h(t))
            if r.status_code == 200:
                return t, r.json()
        raise AssertionError(f"no tenant sees {kind} {record_id}")


class RegistryWorld(World):
    service = "registry"
    tenant_role = "licensee"
    KINDS = ("licensee", "license", "model")

    def __init__(self, stack: SecurityStack) -> None:
        super().__init__(stack)
        ops = self.headers("operator")
        # Licensees are created by the operator; a licensee's token carries its id as `sub`.
        for t in "ab":
            r = self.client.post("/v1/licensees", json={"name": f"Sec tenant {t}"}, headers=ops)
            self.subs[t] = self.records[("licensee", t)] = str(_ok(r, 201)["id"])
        self.subject_id, self.samples = stack.projection.samples(4)
        self.consent_id = stack.projection.grant(self.subject_id, self.samples)
        self.samples_of = {"a": self.samples[:2], "b": self.samples[2:]}
        for t in "ab":
            self.record("license", t)
            self.record("model", t)
            for s in self.samples_of[t]:
                self.records[(f"sample:{s}", t)] = s

    def license_body(self, tenant: str) -> dict[str, Any]:
        return {
            "licensee_id": self.subs[tenant],
            "consent_id": self.consent_id,
            "purpose": "model_training",
            "sample_ids": self.samples_of[tenant],
        }

    def model_body(self, tenant: str) -> dict[str, Any]:
        return {
            "name": f"model-{uuid.uuid4().hex[:8]}",
            "version": "1",
            "license_ids": [self.record("license", tenant)],
        }

    def make(self, kind: str, tenant: str) -> str:
        if kind == "license":
            r = self.client.post(
                "/v1/licenses", json=self.license_body(tenant), headers=self.headers("operator")
            )
            return str(_ok(r, 200, 201)["id"])
        if kind == "model":
            r = self.client.post("/v1/models", json=self.model_body(tenant), headers=self.h(tenant))
            return str(_ok(r, 201)["id"])
        raise ValueError(kind)

    def h(self, tenant: str) -> dict[str, str]:
        return self.headers("licensee", tenant)

    def snapshot(self, kind: str, record_id: str) -> Any:
        path = {"licensee": "/v1/licensees/{}", "license": "/v1/licenses/{}", "model": "/v1/models/{}"}[kind]
        return _ok(self.client.get(path.format(record_id), headers=self.headers("operator")), 200)


def _row(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in sa_inspect(obj).mapper.column_attrs}


class WorkerWorld(World):
    service = "worker"
    tenant_role = "licensee"
    KINDS = ("notice", "endpoint", "ack_key")
    URL = "http://127.0.0.1:9/hook"  # never dialled: no delivery loop runs on this database

    @staticmethod
    def ack_key_body() -> dict[str, Any]:
        """A fresh Ed25519 public JWK (each registration needs a key of its own)."""
        public = ed25519.Ed25519PrivateKey.generate().public_key()
        return {"jwk": dict(OKPAlgorithm.to_jwk(public, as_dict=True))}

    def __init__(self, stack: SecurityStack) -> None:
        super().__init__(stack)
        self.w = stack.worker
        self.subs = {t: f"lic_sec{t}{uuid.uuid4().hex[:12]}" for t in "ab"}
        for t in "ab":
            self.record("notice", t)
            self.record("endpoint", t)

    def h(self, tenant: str) -> dict[str, str]:
        return self.headers("licensee", tenant)

    def make(self, kind: str, tenant: str) -> str:
        if kind == "notice":
            return self.w.make_notice(self.subs[tenant], samples=2)
        if kind == "endpoint":
            return self.w.register(self.h(tenant), self.URL)[0]
        if kind == "licensee_policy":
            return self.subs[tenant]  # the licensee itself
        if kind == "ack_key":
            r = self.w.client.post("/v1/ack-keys", json=self.ack_key_body(), headers=self.h(tenant))
            assert r.status_code == 201, r.text
            return str(r.json()["id"])
        raise ValueError(kind)

    def snapshot(self, kind: str, record_id: str) -> Any:
        with self.w.ctx.session_factory() as session:
            if kind == "endpoint":
                endpoint = session.get(Endpoint, record_id)
                return _row(endpoint) if endpoint else None
            if kind == "ack_key":
                key = session.get(AckKey, record_id)
                return _row(key) if key else None
            if kind == "licensee_policy":
                policy = session.get(LicenseePolicy, record_id)
                return _row(policy) if policy else None
            notice = session.get(Notice, record_id)
            deliveries = session.scalars(select(Delivery).where(Delivery.notice_id == record_id))
            return (_row(notice) if notice else None, sorted(map(repr, map(_row, deliveries))))
