"""A service's token for calling another: the configured one, else minted and verifiable by the
callee (`rescind_common.service_token`). Files only: the development key in a temporary dir."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jwt
import pytest

from rescind_common.auth import Role, TokenVerifier
from rescind_common.service_token import ServiceToken, mint_service_token
from rescind_common.settings import RescindSettings


def test_a_configured_token_is_shown_as_it_is(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path)
    token = ServiceToken(s, subject="consent-api", static="tok-123", ttl=dt.timedelta(minutes=5))
    assert token.headers() == {"Authorization": "Bearer tok-123"}
    assert not (tmp_path / "keys").exists()  # nothing minted, no key made


def test_a_minted_token_is_accepted_by_the_callee_as_an_operator(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path)
    raw = mint_service_token(s, subject="revocation-worker", ttl=dt.timedelta(hours=1))
    assert jwt.get_unverified_header(raw)["alg"] == "ES256"
    principal = TokenVerifier(s).verify(raw)
    assert (principal.sub, principal.role) == ("revocation-worker", Role.OPERATOR)


def test_a_minted_token_is_reused_until_half_its_life_has_gone(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path)
    now = [dt.datetime(2026, 3, 1, tzinfo=dt.UTC)]
    token = ServiceToken(s, subject="w", static=None, ttl=dt.timedelta(hours=1), clock=lambda: now[0])
    first = token.value()
    now[0] += dt.timedelta(minutes=30)
    assert token.value() == first
    now[0] += dt.timedelta(seconds=1)
    assert token.value() != first


def test_settings_not_accepting_the_keys_algorithm_refuse_to_mint(tmp_path: Path) -> None:
    s = RescindSettings(state_dir=tmp_path, auth_algorithms=["RS256"])
    with pytest.raises(ValueError, match="RESCIND_AUTH_ALGORITHMS"):
        mint_service_token(s, subject="w", ttl=dt.timedelta(minutes=5))
