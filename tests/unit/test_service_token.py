"""A service's token for calling another: the configured one, else minted and verifiable by the
callee (`rescind_common.service_token`). Files only: the development key in a temporary dir."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import jwt
import pytest

from rescind_common.auth import Role, ServiceScope, TokenVerifier
from rescind_common.problems import Problem
from rescind_common.service_token import ServiceToken, mint_service_token
from rescind_common.settings import RescindSettings


def test_a_configured_token_is_shown_as_it_is(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path)
    token = ServiceToken(
        s, subject="consent-api", scope=ServiceScope.RECIPIENTS, static="tok-123", ttl=dt.timedelta(minutes=5)
    )
    assert token.headers() == {"Authorization": "Bearer tok-123"}
    assert not (tmp_path / "keys").exists()  # nothing minted, no key made


def test_a_minted_token_is_a_scoped_service_token_for_the_callee_alone(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path)
    raw = mint_service_token(
        s, subject="revocation-worker", scopes=[ServiceScope.HOLDERS], ttl=dt.timedelta(hours=1)
    )
    assert jwt.get_unverified_header(raw)["alg"] == "ES256"
    principal = TokenVerifier(s, service="registry").verify(raw)
    assert (principal.sub, principal.role, principal.scopes) == (
        "revocation-worker",
        Role.SERVICE,
        {"holders"},
    )
    # Not an operator, and no other service takes it: its audience is the registry's alone.
    assert jwt.decode(raw, options={"verify_signature": False})["aud"] == s.auth_registry_audience
    for other in ("consent-api", "revocation-worker"):
        with pytest.raises(Problem) as refused:
            TokenVerifier(s, service=other).verify(raw)
        assert refused.value.status == 401


def test_the_shared_audience_never_opens_a_service_for_a_service_token(tmp_path: Path) -> None:
    """RESCIND_AUTH_AUDIENCE (deprecated) still admits people's tokens, never a service token."""
    from rescind_common.auth import ensure_dev_key, mint_token

    s = RescindSettings(state_dir=tmp_path, auth_audience="rescind")
    key = ensure_dev_key(s.dev_auth_key_file)
    verifier = TokenVerifier(s, service="registry")
    person = mint_token(key, sub="ops", role="operator", issuer=s.auth_issuer, audience="rescind")
    assert verifier.verify(person).role == Role.OPERATOR
    service = mint_token(
        key, sub="w", role="service", issuer=s.auth_issuer, audience="rescind", scopes=["holders"]
    )
    with pytest.raises(Problem) as refused:
        verifier.verify(service)
    assert refused.value.status == 401


def test_a_minted_token_is_reused_until_half_its_life_has_gone(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path)
    now = [dt.datetime(2026, 3, 1, tzinfo=dt.UTC)]
    token = ServiceToken(
        s,
        subject="w",
        scope=ServiceScope.HOLDERS,
        static=None,
        ttl=dt.timedelta(hours=1),
        clock=lambda: now[0],
    )
    first = token.value()
    now[0] += dt.timedelta(minutes=30)
    assert token.value() == first
    now[0] += dt.timedelta(seconds=1)
    assert token.value() != first


def test_settings_not_accepting_the_keys_algorithm_refuse_to_mint(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path, auth_algorithms=["RS256"])
    with pytest.raises(ValueError, match="RESCIND_AUTH_ALGORITHMS"):
        mint_service_token(s, subject="w", scopes=[ServiceScope.HOLDERS], ttl=dt.timedelta(minutes=5))


def test_rescind_token_mints_people_for_every_service_and_services_for_their_callee(tmp_path: Path) -> None:
    """`rescind token --role subject --sub alice` works at all three services (the README's story);
    `--role service --scope holders` at the registry alone, as a service."""
    from rescind_cli.errors import CliError
    from rescind_cli.tokens import dev_token

    s = RescindSettings(state_dir=tmp_path)
    ttl = dt.timedelta(minutes=5)
    verifiers = {
        name: TokenVerifier(s, service=name) for name in ("consent-api", "registry", "revocation-worker")
    }
    alice = dev_token(s, role="subject", sub="alice", ttl=ttl)
    assert all(v.verify(alice).sub == "alice" for v in verifiers.values())
    service = dev_token(s, role="service", sub="revocation-worker", ttl=ttl, scopes=["holders"])
    assert verifiers["registry"].verify(service).scopes == {"holders"}
    for name in ("consent-api", "revocation-worker"):
        with pytest.raises(Problem):
            verifiers[name].verify(service)
    with pytest.raises(CliError, match="--scope"):
        dev_token(s, role="service", sub="w", ttl=ttl)
    with pytest.raises(CliError, match="--role service only"):
        dev_token(s, role="operator", sub="ops", ttl=ttl, scopes=["holders"])


def test_production_refuses_a_process_without_a_secret_it_reads_and_no_other(tmp_path: Path) -> None:
    from revocation_worker.config import WorkerSettings

    s = WorkerSettings(
        profile="production",
        auth_issuer="https://idp.example",
        auth_jwks_url="https://idp.example/jwks.json",
        worker_secret_key=base64.b64encode(bytes(32)).decode(),
        worker_audit_signing_key_file=tmp_path / "audit.pem",
    )
    s.require_secrets("serve")  # the API has its keys, and needs no registry token
    with pytest.raises(ValueError, match="RESCIND_WORKER_AUDIT_SIGNING_KEY_FILE"):
        s.model_copy(update={"worker_audit_signing_key_file": None}).require_secrets("serve")
    s.require_secrets("worker --role delivery")
    with pytest.raises(ValueError, match="RESCIND_WORKER_REGISTRY_TOKEN"):
        s.require_secrets("worker --role intake")
    intake_only = s.model_copy(update={"worker_secret_key": None, "worker_registry_token": "t"})
    intake_only.require_secrets("worker --role intake")  # intake never reads the secret key
    with pytest.raises(ValueError, match="RESCIND_WORKER_SECRET_KEY"):
        intake_only.require_secrets("serve")
