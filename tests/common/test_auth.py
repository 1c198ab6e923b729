"""Who may call what: bearer JWTs (signature, alg, exp, iss, aud) and roles."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rescind_common.auth import TOKEN_CACHE_TTL, Principal, TokenVerifier, ensure_dev_key
from rescind_common.problems import Problem

from support.helpers import assert_problem, bearer, register

# One request per kind of subject endpoint: reads, writes, lists.
SUBJECT_CALLS = [
    ("GET", "/v1/samples", None),
    ("POST", "/v1/samples", {"kind": "face_image", "sha256": "a" * 64}),
    ("GET", "/v1/consents", None),
    ("POST", "/v1/consents", {"all_samples": True, "purposes": ["model_training"]}),
    ("GET", "/v1/consents/cns_00000000000000000000000000", None),
    ("POST", "/v1/consents/cns_00000000000000000000000000/revoke", None),
    ("POST", "/v1/revocations", {"scope": "all"}),
    ("GET", "/v1/revocations", None),
    ("POST", "/v1/rights-requests", {"type": "access"}),
    ("GET", "/v1/profile", None),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(settings, **over):
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims = {
        "sub": f"seller-{uuid.uuid4().hex[:12]}",
        "role": "subject",
        "iss": settings.auth_issuer,
        "aud": settings.token_audiences,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(over)
    return claims


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    h = _b64(json.dumps(header, separators=(",", ":")).encode())
    p = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}.{_b64(signature)}"


def assert_401(response) -> None:
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_valid_token_is_accepted(client, seller):
    # The control for every negative test below: the same endpoint works with a good token.
    assert client.get("/v1/samples", headers=seller).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), SUBJECT_CALLS)
def test_missing_token_is_401_on_every_subject_endpoint(client, method, path, body):
    assert_401(client.request(method, path, json=body))


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer ", "Bearer not-a-jwt", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "bearer ..."],
)
def test_garbage_authorization_is_401(client, authorization):
    assert_401(client.get("/v1/consents", headers={"Authorization": authorization}))


def test_forged_signature_from_another_ec_key_is_401(client, settings):
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(_claims(settings), attacker, algorithm="ES256")
    assert_401(client.get("/v1/consents", headers=bearer(forged)))


def test_tampered_payload_of_a_real_token_is_401(client, token, settings):
    real = token("subject")
    header, payload, sig = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"
    assert_401(client.get("/v1/consents", headers=bearer(forged)))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_401(client, settings, alg):
    tok = _unsigned({"alg": alg, "typ": "JWT"}, _claims(settings))
    assert_401(client.get("/v1/consents", headers=bearer(tok)))
    # and also with a trailing dot only (no signature segment content)
    assert_401(client.get("/v1/consents", headers=bearer(tok.rsplit(".", 1)[0] + ".")))


def test_hs256_signed_with_the_public_key_is_401(client, settings):
    """Algorithm confusion: an attacker who knows the ES256 public key uses it as an HMAC secret."""
    public = ensure_dev_key(settings.dev_auth_key_file).public_key()
    secrets = [
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]
    for secret in secrets:
        for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
            header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
            payload = _b64(json.dumps(_claims(settings)).encode())
            sig = hmac.new(secret, f"{header}.{payload}".encode(), digest).digest()
            assert_401(client.get("/v1/consents", headers=bearer(f"{header}.{payload}.{_b64(sig)}")))


def test_other_asymmetric_alg_is_401(client, settings):
    key = ec.generate_private_key(ec.SECP384R1())
    tok = jwt.encode(_claims(settings), key, algorithm="ES384")
    assert_401(client.get("/v1/consents", headers=bearer(tok)))


def test_expired_token_is_401(client, token):
    tok = token("subject", ttl=dt.timedelta(minutes=-10))
    r = client.get("/v1/consents", headers=bearer(tok))
    assert_401(r)
    assert "expired" in r.json()["detail"].lower()


def test_wrong_audience_is_401(client, token):
    r = client.get("/v1/consents", headers=bearer(token("subject", audience="some-other-api")))
    assert_401(r)
    assert "audience" in r.json()["detail"].lower()


def test_wrong_issuer_is_401(client, token):
    r = client.get("/v1/consents", headers=bearer(token("subject", issuer="https://evil.example")))
    assert_401(r)
    assert "issuer" in r.json()["detail"].lower()


def _resign(settings, real: str, **changes) -> str:
    """Re-sign a real token's claims, changed, with the real key: only the claim checks can refuse it."""
    claims = jwt.decode(real, options={"verify_signature": False})
    for name, value in changes.items():
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, ensure_dev_key(settings.dev_auth_key_file), algorithm="ES256")


_DROP = object()


def test_resigned_token_control_is_accepted(client, token, settings):
    # Control for the two tests below: re-signing itself produces a valid token.
    assert client.get("/v1/consents", headers=bearer(_resign(settings, token("subject")))).status_code == 200


@pytest.mark.parametrize("drop", ["exp", "iss", "aud", "sub"])
def test_token_missing_a_required_claim_is_401(client, token, settings, drop):
    assert_401(
        client.get("/v1/consents", headers=bearer(_resign(settings, token("subject"), **{drop: _DROP})))
    )


@pytest.mark.parametrize("role", [_DROP, "admin", "", "Subject", None])
def test_unknown_or_missing_role_is_401(client, token, settings, role):
    assert_401(client.get("/v1/consents", headers=bearer(_resign(settings, token("subject"), role=role))))


def test_empty_subject_claim_is_401(client, token, settings):
    assert_401(client.get("/v1/consents", headers=bearer(_resign(settings, token("subject"), sub=""))))


@pytest.mark.parametrize("role", ["licensee", "operator"])
@pytest.mark.parametrize(("method", "path", "body"), SUBJECT_CALLS)
def test_non_subject_roles_get_403_on_subject_endpoints(client, token, role, method, path, body):
    r = client.request(method, path, json=body, headers=bearer(token(role)))
    assert_problem(r, 403)


def test_operator_cannot_act_as_a_subject_with_the_same_sub(client, token):
    """A licensee/operator token must never reach a subject's records, even with the same `sub`."""
    sub = f"shared-{uuid.uuid4().hex[:8]}"
    seller = bearer(token("subject", sub=sub))
    register(client, seller)
    for role in ("licensee", "operator"):
        r = client.get("/v1/samples", headers=bearer(token(role, sub=sub)))
        assert_problem(r, 403)


@pytest.mark.parametrize("role", ["subject", "licensee"])
def test_audit_verify_is_operator_only(client, token, role):
    assert_problem(client.get("/v1/audit/verify", headers=bearer(token(role))), 403)
    assert_problem(
        client.get("/v1/audit/entries", params={"subject_id": "sub_x"}, headers=bearer(token(role))), 403
    )


def test_audit_verify_without_token_is_401(client):
    assert_401(client.get("/v1/audit/verify"))


def test_public_endpoints_need_no_token(client):
    assert client.get("/healthz").status_code == 200
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200 and r.json()["keys"]


# Verified tokens are cached (per exact token string) so a repeat skips the signature check. The cache
# must never let through what a first sight would refuse.


def test_cached_token_is_refused_once_it_expires(client, token, settings):
    leeway = settings.auth_leeway_seconds
    # Lapses (exp + leeway) about 1.5 s from now.
    tok = token("subject", ttl=dt.timedelta(seconds=1.5 - leeway))
    assert client.get("/v1/consents", headers=bearer(tok)).status_code == 200
    assert client.get("/v1/consents", headers=bearer(tok)).status_code == 200  # served from the cache
    time.sleep(2.0)
    r = client.get("/v1/consents", headers=bearer(tok))
    assert_401(r)
    assert "expired" in r.json()["detail"].lower()


def test_changed_signature_is_refused_while_the_genuine_token_is_cached(client, token):
    real = token("subject")
    assert client.get("/v1/consents", headers=bearer(real)).status_code == 200
    header, payload, sig = real.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[-1] ^= 1
    assert_401(client.get("/v1/consents", headers=bearer(f"{header}.{payload}.{_b64(bytes(raw))}")))
    assert_401(client.get("/v1/consents", headers=bearer(f"{header}.{payload}.")))
    assert client.get("/v1/consents", headers=bearer(real)).status_code == 200


def test_tampered_payload_is_refused_while_the_genuine_token_is_cached(client, token):
    real = token("subject")
    assert client.get("/v1/consents", headers=bearer(real)).status_code == 200
    header, payload, sig = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    assert_401(
        client.get("/v1/consents", headers=bearer(f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"))
    )


def test_token_verifier_caches_successes_only_and_is_bounded(settings, token):
    verifier = TokenVerifier(settings.model_copy(update={"auth_token_cache_size": 2}), service="consent-api")
    checks: list[str] = []
    full = verifier._verify

    def counting(tok: str) -> tuple[Principal, float]:
        checks.append(tok)
        return full(tok)

    verifier._verify = counting  # type: ignore[method-assign]
    a, b, c = token("subject"), token("subject"), token("subject")
    first = verifier.verify(a)
    assert verifier.verify(a) is first and checks == [a]  # the repeat is served from the cache
    bad = a[:-2] + ("AA" if not a.endswith("AA") else "BB")
    for _ in range(2):  # a failure is checked in full every time, never remembered
        with pytest.raises(Problem):
            verifier.verify(bad)
    assert checks == [a, bad, bad]
    verifier.verify(b)
    verifier.verify(c)  # evicts a, the least recently used
    verifier.verify(a)
    assert checks == [a, bad, bad, b, c, a]
    # Lapsed entries are checked in full again (and an expired token then refused by PyJWT).
    verifier.clock = lambda: time.time() + TOKEN_CACHE_TTL + 1
    verifier.verify(a)
    assert checks[-1] == a and len(checks) == 7
