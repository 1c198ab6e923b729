"""Rotation of the key that seals endpoint secrets, on real PostgreSQL: secrets sealed under key A,
`revocation-worker keys rotate` to key B, A removed; webhooks are still signed with each endpoint's
own secret (real local receivers verify them), and an endpoint whose secret is still under a removed
key gets nothing unsigned: its delivery fails with a clear error while the others go on."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from revocation_worker.__main__ import main as worker_main
from revocation_worker.migrate import upgrade

from support.helpers import migrated_db
from support.wait import wait_until
from support.worker import Receiver, WorkerHarness


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def harness(
    pg_database: Callable[[str], str], tmp_path: Path, state_dir: Path
) -> Iterator[Callable[..., WorkerHarness]]:
    """harness(**settings) -> a worker on a database of this test's own (the rotation walks all of it)."""
    url = migrated_db("postgresql", pg_database, tmp_path, "worker", upgrade)
    made: list[WorkerHarness] = []

    def make(**overrides: Any) -> WorkerHarness:
        h = WorkerHarness(url, state_dir, **overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop_loops()
    for h in made:
        h.close()


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for r in made:
        r.close()


def _command(monkeypatch: pytest.MonkeyPatch, w: WorkerHarness, env: dict[str, str], *argv: str) -> int:
    for name in ("WORKER_SECRET_KEY", "WORKER_SECRET_KEYS", "WORKER_SECRET_KEY_ID"):
        monkeypatch.delenv(f"RESCIND_{name}", raising=False)
    monkeypatch.setenv("RESCIND_WORKER_DATABASE_URL", w.settings.worker_database_url)
    monkeypatch.setenv("RESCIND_STATE_DIR", str(w.settings.state_dir))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        worker_main(list(argv))
    return int(exited.value.code or 0)


def test_rotated_key_still_signs_with_each_endpoints_secret(
    harness: Callable[..., WorkerHarness],
    receivers: Callable[[], Receiver],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_a, key_b = _key(), _key()
    # A deployment from before key ids: one key.
    old = harness(worker_secret_key=key_a)
    plain_rcv, rotated_rcv = receivers(), receivers()
    lic1, h1 = old.licensee()
    _, secret1 = old.register(h1, plain_rcv.url)
    lic2, h2 = old.licensee()
    ep2, secret2_old = old.register(h2, rotated_rcv.url)
    r = old.client.post(f"/v1/endpoints/{ep2}/rotate-secret", headers=h2)
    assert r.status_code == 200, r.text
    secret2_new = r.json()["secret"]  # the previous one keeps signing through its grace period

    ring = {"RESCIND_WORKER_SECRET_KEYS": f'{{"v1": "{key_a}", "2027-01": "{key_b}"}}'}
    ring["RESCIND_WORKER_SECRET_KEY_ID"] = "2027-01"
    assert _command(monkeypatch, old, ring, "keys", "rotate", "--batch-size", "1") == 0
    out = capsys.readouterr().out
    assert "2 rewrapped under key '2027-01'" in out and "by key now: 2027-01: 3" in out
    assert _command(monkeypatch, old, ring, "keys", "rotate") == 0  # idempotent
    assert "0 rewrapped" in capsys.readouterr().out

    # Key A removed.
    new = harness(worker_secret_keys={"2027-01": key_b})
    n1, n2 = new.make_notice(lic1), new.make_notice(lic2)
    new.deliver()
    (got1,) = plain_rcv.wait_for(1)
    assert Webhook(secret1).verify(got1.body, got1.headers)["data"]["notice_id"] == n1
    (got2,) = rotated_rcv.wait_for(1)
    assert Webhook(secret2_new).verify(got2.body, got2.headers)["data"]["notice_id"] == n2
    assert Webhook(secret2_old).verify(got2.body, got2.headers)["data"]["notice_id"] == n2


def test_a_secret_under_a_removed_key_fails_its_delivery_clearly(
    harness: Callable[..., WorkerHarness],
    receivers: Callable[[], Receiver],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_a, key_b = _key(), _key()
    old = harness(worker_secret_key=key_a)
    stranded_rcv, fine_rcv = receivers(), receivers()
    stranded, hs = old.licensee()
    old.register(hs, stranded_rcv.url)  # sealed under A, never rotated
    new = harness(worker_secret_keys={"k2": key_b})
    fine, hf = new.licensee()
    _, fine_secret = new.register(hf, fine_rcv.url)

    bad, good = new.make_notice(stranded), new.make_notice(fine)
    new.deliver()
    (got,) = fine_rcv.wait_for(1)
    assert Webhook(fine_secret).verify(got.body, got.headers)["data"]["notice_id"] == good

    def failed() -> list[str] | None:
        errors = [a.error or "" for a in new.attempts(bad)]
        return errors or None

    errors = wait_until(failed, what="the stranded delivery's first attempt")
    assert "signing secret unavailable" in errors[0] and "'v1'" in errors[0]
    assert stranded_rcv.count() == 0  # nothing unsigned ever leaves
    assert new.notice(hs, bad)["status"] == "pending"

    # The commands name the missing key and exit 1.
    only_b = {"RESCIND_WORKER_SECRET_KEYS": f'{{"k2": "{key_b}"}}'}
    assert _command(monkeypatch, new, only_b, "keys", "status") == 1
    assert "1 under key 'v1', which is not configured" in capsys.readouterr().out
    assert _command(monkeypatch, new, only_b, "keys", "rotate") == 1
    assert "1 under key 'v1', which is not configured" in capsys.readouterr().out
