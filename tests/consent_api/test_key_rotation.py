"""Master-key rotation of consent-api on real PostgreSQL: data written under key A, rotated to key B
with `consent-api keys rotate`, A removed; every subject keeps its identity and its personal data,
and a key still under a removed master key answers a clear problem, not a crash."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from consent_api.__main__ import main as consent_api_main
from consent_api.main import create_app
from consent_api.migrate import upgrade
from consent_api.rotation import rotate
from consent_api.subjects import service as subjects_service
from rescind_cli.main import main as rescind_main
from rescind_common.db import make_engine

from support.helpers import TokenFactory, assert_problem, auth, get_json, make_settings, migrated_db, sha

PROFILE = {"display_name": "Ada", "email": "ada@example.com", "country": "GB"}


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def pg_url(pg_database: Callable[[str], str], tmp_path: Path) -> str:
    # A database of its own: the rotation walks every subject key in it.
    return migrated_db("postgresql", pg_database, tmp_path, "consent", upgrade)


@pytest.fixture
def stack(pg_url: str, tmp_path: Path, state_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """stack(**settings) -> consent-api on the test's database. A state dir without key files:
    only the keys the test configures exist (the token key is the run's)."""
    own_state = tmp_path / "state"
    (own_state / "keys").mkdir(parents=True)
    (own_state / "keys" / "auth-es256.pem").write_bytes((state_dir / "keys" / "auth-es256.pem").read_bytes())
    made: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        c = TestClient(create_app(make_settings(pg_url, own_state, **overrides)))
        c.__enter__()
        made.append(c)
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)


def _env(monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, **values: str) -> None:
    for name in (
        "CONSENT_MASTER_KEY",
        "CONSENT_MASTER_KEYS",
        "CONSENT_MASTER_KEY_ID",
        "CONSENT_SUBJECT_PEPPER",
    ):
        monkeypatch.delenv(f"RESCIND_{name}", raising=False)
    monkeypatch.setenv("RESCIND_CONSENT_DATABASE_URL", pg_url)
    monkeypatch.setenv("RESCIND_STATE_DIR", str(tmp_path / "state"))
    for name, value in values.items():
        monkeypatch.setenv(f"RESCIND_{name.upper()}", value)


def _command(*argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        consent_api_main(list(argv))
    return int(exited.value.code or 0)


def _seller_data(client: TestClient, h: dict[str, str]) -> dict[str, Any]:
    """What a seller notices of itself: its subject id, profile, sample attributes, revocation reason."""
    profile = get_json(client, "/v1/profile", h)
    r = client.post("/v1/rights-requests", json={"type": "access"}, headers=h)
    assert r.status_code == 201, r.text
    export = r.json()["export"]
    return {
        "subject_id": profile["subject_id"],
        "profile": {k: profile[k] for k in PROFILE},
        "attributes": sorted(str(s["attributes"]) for s in export["samples"]),
        "reasons": sorted(str(rev["reason"]) for rev in export["revocations"]),
        "consents": sorted(c["id"] for c in export["consents"]),
    }


def _write_seller(client: TestClient, h: dict[str, str]) -> None:
    assert client.put("/v1/profile", json=PROFILE, headers=h).status_code == 200
    r = client.post(
        "/v1/samples",
        json={"kind": "voice_recording", "sha256": sha(), "attributes": {"accent": "Scots"}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    c = client.post(
        "/v1/consents", json={"sample_ids": [r.json()["id"]], "purposes": ["evaluation"]}, headers=h
    )
    assert c.status_code == 201, c.text
    rev = client.post(f"/v1/consents/{c.json()['id']}/revoke", json={"reason": "moved away"}, headers=h)
    assert rev.status_code == 202, rev.text


def test_rotating_the_master_key_keeps_identities_and_data(
    stack: Callable[..., TestClient],
    pg_url: str,
    tmp_path: Path,
    token: TokenFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_a, key_b = _key(), _key()
    # A deployment from before key ids: one master key, no pepper setting.
    before = stack(consent_master_key=key_a)
    sellers = [auth(token("subject", sub=f"rotation-seller-{i}")) for i in range(3)]
    for h in sellers:
        _write_seller(before, h)
    seen = [_seller_data(before, h) for h in sellers]

    # The runbook: print the legacy pepper and configure it, add key B as current, rotate.
    _env(monkeypatch, pg_url, tmp_path, consent_master_key=key_a)
    assert _command("keys", "legacy-pepper") == 0
    pepper = capsys.readouterr().out.strip()
    _env(
        monkeypatch,
        pg_url,
        tmp_path,
        consent_master_keys=f'{{"v1": "{key_a}", "2027-01": "{key_b}"}}',
        consent_master_key_id="2027-01",
        consent_subject_pepper=pepper,
    )
    assert _command("keys", "status") == 1  # everything still under v1
    assert "v1: 3" in capsys.readouterr().out
    assert _command("keys", "rotate", "--batch-size", "2") == 0
    out = capsys.readouterr().out
    assert "3 rewrapped under key '2027-01'" in out and "nothing is under key(s) 'v1'" in out
    # Idempotent: a second run finds nothing to do (here through `rescind keys`, as operators run it).
    assert rescind_main(["keys", "rotate", "--service", "consent-api"]) == 0
    assert _command("keys", "rotate") == 0
    assert "0 rewrapped" in capsys.readouterr().out
    assert rescind_main(["keys", "status", "--service", "consent-api"]) == 0

    # Key A removed: every seller is the same subject, with the same data.
    after = stack(consent_master_keys={"2027-01": key_b}, consent_subject_pepper=pepper)
    assert [_seller_data(after, h) for h in sellers] == seen
    # New subjects' keys are wrapped under B and readable.
    new = auth(token("subject", sub="rotation-seller-new"))
    _write_seller(after, new)
    assert _seller_data(after, new)["profile"] == PROFILE


def test_a_key_under_a_removed_master_key_is_a_clear_problem(
    stack: Callable[..., TestClient],
    pg_url: str,
    tmp_path: Path,
    token: TokenFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_a, key_b, pepper = _key(), _key(), _key()
    h = auth(token("subject", sub="left-behind"))
    old = stack(consent_master_key=key_a, consent_subject_pepper=pepper)
    _write_seller(old, h)
    # B only: the subject key written under A (v1) was never rewrapped.
    new = stack(consent_master_keys={"k2": key_b}, consent_subject_pepper=pepper)
    r = new.get("/v1/profile", headers=h)
    body = assert_problem(r, 503)
    assert body["type"] == "https://rescind.dev/problems/key-unavailable"
    assert body["key_id"] == "v1" and "'v1'" in body["detail"]
    # The rotation says which key it lacks and fails, rather than crashing.
    only_b = make_settings(
        pg_url, tmp_path / "state", consent_master_keys={"k2": key_b}, consent_subject_pepper=pepper
    )
    report = rotate(only_b)
    assert report.unavailable == {"v1": 1} and not report.complete
    # Once the key is configured again the same subject reads its data.
    back = stack(
        consent_master_keys={"v1": key_a, "k2": key_b},
        consent_master_key_id="k2",
        consent_subject_pepper=pepper,
    )
    assert get_json(back, "/v1/profile", h)["display_name"] == "Ada"
    # Erasure never needs the key: a subject stranded under a removed key can still be erased.
    assert new.post("/v1/rights-requests", json={"type": "erasure"}, headers=h).status_code == 202
    assert_problem(back.get("/v1/profile", headers=h), 404)


def test_a_removed_master_key_without_a_pepper_is_refused_at_start(pg_url: str, tmp_path: Path) -> None:
    # The legacy pepper comes from key v1: without it and without a pepper, identities would change.
    with pytest.raises(ValueError, match="RESCIND_CONSENT_SUBJECT_PEPPER"):
        make_settings(
            pg_url,
            tmp_path,
            profile="production",
            consent_master_keys={"k2": _key()},
            consent_receipt_key_file=tmp_path / "r.pem",
            auth_public_key_file=tmp_path / "a.pem",
            auth_issuer="https://idp.example",
        ).require_secrets("serve")


def test_an_interrupted_rotation_resumes_where_it_stopped(
    stack: Callable[..., TestClient],
    pg_url: str,
    tmp_path: Path,
    token: TokenFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_a, key_b, pepper = _key(), _key(), _key()
    old = stack(consent_master_key=key_a, consent_subject_pepper=pepper)
    sellers = [auth(token("subject", sub=f"resume-{i}")) for i in range(3)]
    for h in sellers:
        _write_seller(old, h)
    ring = make_settings(
        pg_url,
        tmp_path / "state",
        consent_master_keys={"v1": key_a, "k2": key_b},
        consent_master_key_id="k2",
        consent_subject_pepper=pepper,
    )
    real = subjects_service.rewrap
    calls = 0

    def crash_on_second_batch(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the pod was killed")
        return real(*args)

    monkeypatch.setattr(subjects_service, "rewrap", crash_on_second_batch)
    with pytest.raises(RuntimeError):
        rotate(ring, batch_size=1)
    monkeypatch.setattr(subjects_service, "rewrap", real)
    # The first batch committed; the run again picks up the rest.
    report = rotate(ring, batch_size=1)
    assert report.rewrapped == 2 and report.complete and report.counts == {"k2": 3}
    after = stack(consent_master_keys={"k2": key_b}, consent_subject_pepper=pepper)
    assert all(get_json(after, "/v1/profile", h)["email"] == PROFILE["email"] for h in sellers)


def test_another_pepper_is_refused_rather_than_making_every_seller_new(
    stack: Callable[..., TestClient], pg_url: str, token: TokenFactory
) -> None:
    key_a = _key()
    h = auth(token("subject", sub="pepper-check"))
    # A deployment from before the pepper check: subjects hashed with the legacy pepper, no check value.
    old = stack(consent_master_key=key_a)
    _write_seller(old, h)
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM key_checks"))
    # The operator sets a brand-new pepper instead of the legacy one: every seller would be new.
    wrong = stack(consent_master_key=key_a, consent_subject_pepper=_key())
    body = assert_problem(wrong.get("/v1/profile", headers=h), 503)
    assert body["type"] == "https://rescind.dev/problems/pepper-mismatch"
    assert_problem(wrong.post("/v1/samples", json={"kind": "other", "sha256": sha()}, headers=h), 503)
    # Configured as before, the seller is still there; the check value is recorded now ...
    same = stack(consent_master_key=key_a)
    assert get_json(same, "/v1/profile", h)["display_name"] == "Ada"
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM key_checks")).scalar() == 1
    engine.dispose()
    # ... and any other pepper is refused from then on, even with the master key gone.
    other = stack(consent_master_keys={"k2": _key()}, consent_subject_pepper=_key())
    assert_problem(other.get("/v1/profile", headers=h), 503)
