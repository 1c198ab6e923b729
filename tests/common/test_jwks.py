"""Keys from an identity provider's JWKS (a real local JWKS endpoint): rotated in, removed, unknown."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm

from consent_api.main import create_app
from rescind_common.auth import Role, TokenVerifier
from rescind_common.problems import Problem

from support.clock import Clock
from support.helpers import auth


class IdentityProvider:
    """A JWKS endpoint on 127.0.0.1 whose keys a test changes, counting the fetches it answers."""

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.fetches = 0
        self.down = False
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if provider.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                provider.fetches += 1
                body = json.dumps({"keys": [provider.jwk(kid) for kid in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwk(self, kid: str) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
        return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}

    def add_key(self) -> str:
        kid = f"k-{uuid.uuid4().hex[:8]}"
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return kid

    def token(self, kid: str, settings: Any, *, key: Any = None, sub: str = "seller-jwks") -> str:
        """A subject token for `settings`' issuer and audience, naming `kid`, signed by that key
        (or by `key`: a forgery naming a key the provider has)."""
        now = int(time.time())
        claims = {
            "sub": sub,
            "role": Role.SUBJECT.value,
            "iss": settings.auth_issuer,
            "aud": settings.audience_of("consent-api"),
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(claims, key or self.keys[kid], algorithm="ES256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.close()


def test_a_key_removed_from_the_jwks_stops_verifying_within_the_cache_interval(idp, settings):
    old = idp.add_key()
    jwks = settings.model_copy(
        update={"auth_jwks_url": idp.url, "auth_jwks_cache_seconds": 1.0, "auth_jwks_refetch_seconds": 0.0}
    )
    with TestClient(create_app(jwks)) as client:
        signed_old = idp.token(old, jwks)
        assert client.get("/v1/consents", headers=auth(signed_old)).status_code == 200
        # Rotation at the provider: a new key in, the old one out.
        new = idp.add_key()
        del idp.keys[old]
        signed_new = idp.token(new, jwks)
        # The new key's unknown kid fetches the set again at once: tokens it signs work now.
        assert client.get("/v1/consents", headers=auth(signed_new)).status_code == 200
        time.sleep(1.2)  # past the key set's lifespan (and so past every token cached under it)
        r = client.get("/v1/consents", headers=auth(signed_old))
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == "The token is signed with an unknown key."
        assert client.get("/v1/consents", headers=auth(signed_new)).status_code == 200


def _verifier(idp: IdentityProvider, settings: Any, **over: Any) -> tuple[TokenVerifier, Clock]:
    verifier = TokenVerifier(
        settings.model_copy(update={"auth_jwks_url": idp.url, **over}), service="consent-api"
    )
    clock = Clock()
    clock.now = time.time()
    verifier.clock = clock
    assert verifier._jwks is not None
    verifier._jwks.clock = clock
    return verifier, clock


def test_unknown_kids_fetch_the_key_set_once_per_refetch_interval(idp, settings):
    known = idp.add_key()
    verifier, clock = _verifier(idp, settings, auth_jwks_cache_seconds=300.0, auth_jwks_refetch_seconds=30.0)
    verifier.verify(idp.token(known, settings))
    assert idp.fetches == 1
    # A flood of tokens naming keys the provider never had (signed by the attacker's own key).
    forger = ec.generate_private_key(ec.SECP256R1())
    for _ in range(50):
        with pytest.raises(Problem) as refused:
            verifier.verify(idp.token(f"forged-{uuid.uuid4().hex[:6]}", settings, key=forger))
        assert refused.value.status == 401
    assert idp.fetches == 2  # one refetch for the first unknown kid, none for the other 49
    # A key the provider adds inside the refetch interval waits for the interval to pass.
    added = idp.add_key()
    with pytest.raises(Problem):
        verifier.verify(idp.token(added, settings))
    assert idp.fetches == 2
    clock.now += 31
    assert verifier.verify(idp.token(added, settings)).sub == "seller-jwks"
    assert idp.fetches == 3
    # A forgery naming a key the provider does have fails the signature check, without a fetch.
    with pytest.raises(Problem):
        verifier.verify(idp.token(known, settings, key=forger))
    assert idp.fetches == 3


def test_rotation_with_both_keys_published_then_the_old_one_removed(idp, settings):
    old, new = idp.add_key(), idp.add_key()
    verifier, clock = _verifier(idp, settings, auth_jwks_cache_seconds=60.0, auth_jwks_refetch_seconds=30.0)
    signed_old, signed_new = idp.token(old, settings), idp.token(new, settings)
    assert verifier.verify(signed_old).sub == verifier.verify(signed_new).sub == "seller-jwks"
    del idp.keys[old]
    clock.now += 30  # inside the key set's lifespan: the token cache and the set still hold
    assert verifier.verify(signed_old).sub == "seller-jwks"
    clock.now += 31  # past it: the set is fetched again, the cached token lapsed with it
    with pytest.raises(Problem) as refused:
        verifier.verify(signed_old)
    assert refused.value.status == 401
    assert verifier.verify(signed_new).sub == "seller-jwks"
    assert idp.fetches == 2


def test_a_provider_outage_past_the_lifespan_refuses_rather_than_trusting_stale_keys(idp, settings):
    kid = idp.add_key()
    verifier, clock = _verifier(idp, settings, auth_jwks_cache_seconds=60.0)
    signed = idp.token(kid, settings)
    verifier.verify(signed)
    idp.down = True
    clock.now += 61
    for _ in range(20):  # one attempt at the provider, then refusals without waiting on it again
        with pytest.raises(Problem) as unavailable:
            verifier.verify(signed)
        assert unavailable.value.status == 503
    idp.down = False
    clock.now += 2
    assert verifier.verify(signed).sub == "seller-jwks"
