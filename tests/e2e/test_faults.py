"""Breaking things on purpose, with the three services as processes (issue 6, fault injection):
the broker replaced by an empty one, PostgreSQL restarted under load, the worker and the
registry consumer SIGKILLed repeatedly. Nothing a seller did may be lost; buyers see at most
redeliveries with the same webhook-id."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rescind_cli.demo import Receiver
from rescind_common.embedded_broker import EmbeddedBroker

from support.stack import Stack, running_on_postgres
from support.wait import wait_until
from test_e2e import World, ok


@pytest.fixture(scope="module")
def stack(pg_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_on_postgres("faults", pg_database, tmp_path_factory.mktemp("faults")) as s:
        yield s


def licensed_consent(w: World, buyer: str) -> tuple[str, list[str]]:
    ids = [s["id"] for s in w.samples(1)]
    consent = w.grant(ids)
    w.license(buyer, consent["id"], ids)
    return consent["id"], ids


def revoke(w: World, consent_id: str) -> str:
    return str(
        ok(w.http.post(f"{w.stack.url('consent')}/v1/consents/{consent_id}/revoke", headers=w.seller))["id"]
    )


def delivered(rx: Receiver) -> set[str]:
    return {v["payload"]["data"]["revocation_id"] for v in rx.verified}


def assert_only_same_id_duplicates(rx: Receiver) -> None:
    assert rx.rejected == 0
    notices_by_webhook_id: dict[str, set[str]] = {}
    for v in rx.verified:
        notices_by_webhook_id.setdefault(v["webhook_id"], set()).add(v["payload"]["data"]["notice_id"])
    assert all(len(n) == 1 for n in notices_by_webhook_id.values())


def test_broker_replaced_by_an_empty_one_loses_nothing(stack: Stack) -> None:
    w = World(stack)
    buyer, buyer_auth = w.licensee("Disaster Buyer")
    with Receiver("disaster") as rx:
        w.endpoint(buyer_auth, rx)
        before, _ = licensed_consent(w, buyer)
        first = revoke(w, before)
        wait_until(
            lambda: first in delivered(rx), timeout=60, what="the first revocation delivered", interval=0.2
        )
        after, _ = licensed_consent(w, buyer)

        # The disaster: the broker and everything it held are gone; an empty one takes its place.
        port = stack.broker.port
        stack.broker.stop(kill=True)
        # consent-api keeps accepting writes meanwhile; its events wait in the outbox.
        during_ids = [s["id"] for s in w.samples(1)]
        during = w.grant(during_ids)["id"]
        stack.broker = EmbeddedBroker(port=port, log_file=stack.tmp / "tansu-2.log").start()

        def licensed() -> bool:
            r = w.post_license(buyer, during, during_ids)
            return r.status_code in (200, 201)

        # The grant made during the outage reaches the registry through the new broker.
        wait_until(
            licensed, timeout=90, what="the registry to learn the grant made during the outage", interval=1
        )
        second, third = revoke(w, after), revoke(w, during)
        wait_until(
            lambda: {second, third} <= delivered(rx),
            timeout=120,
            what="revocations made around the loss delivered",
            interval=0.2,
        )
        # The first notice was not created twice: replayed events were absorbed by idempotency.
        notices = ok(
            w.http.get(f"{stack.url('worker')}/v1/notices", headers=buyer_auth, params={"limit": 100})
        )
        assert sorted(n["revocation_id"] for n in notices["items"]) == sorted([first, second, third])
        assert_only_same_id_duplicates(rx)

    def seller_sees_delivered() -> bool:
        for rid in (first, second, third):
            rev = ok(w.http.get(f"{stack.url('consent')}/v1/revocations/{rid}", headers=w.seller))
            if [n["status"] for n in rev["notices"]] != ["delivered"]:
                return False
        return True

    wait_until(
        seller_sees_delivered, timeout=90, what="the seller to see every notice delivered", interval=0.2
    )


def test_worker_and_registry_consumer_killed_repeatedly_during_a_burst(stack: Stack) -> None:
    w = World(stack)
    buyer, buyer_auth = w.licensee("Chaos Buyer")
    with Receiver("chaos") as rx:
        w.endpoint(buyer_auth, rx)
        consents = [licensed_consent(w, buyer)[0] for _ in range(15)]
        revocations = []
        for i, cid in enumerate(consents):
            revocations.append(revoke(w, cid))
            if i % 5 == 2:
                stack.kill("worker")
                stack.kill("registry-consumer")
                stack.start("worker")
                stack.start("registry-consumer")
        wait_until(
            lambda: set(revocations) <= delivered(rx),
            timeout=180,
            what="every revocation delivered",
            interval=0.2,
        )
        assert_only_same_id_duplicates(rx)
    # The registry's projection converged: every license is revoked.
    licenses = ok(
        w.http.get(f"{stack.url('registry')}/v1/licenses", headers=buyer_auth, params={"limit": 100})
    )
    assert len(licenses["items"]) == 15
    wait_until(
        lambda: all(
            lic["status"] == "revoked"
            for lic in ok(
                w.http.get(f"{stack.url('registry')}/v1/licenses", headers=buyer_auth, params={"limit": 100})
            )["items"]
        ),
        timeout=60,
        what="the registry to mark every license revoked",
        interval=0.2,
    )


def _pg_cluster() -> tuple[str, str] | None:
    if not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"):
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    return (versions[-1], "main") if versions else None


@pytest.mark.skipif(
    _pg_cluster() is None and os.environ.get("CI") != "true", reason="no local PostgreSQL cluster"
)
def test_postgresql_restarted_under_load_fails_cleanly_and_recovers(stack: Stack) -> None:
    cluster = _pg_cluster()
    assert cluster is not None, "CI must be able to restart its PostgreSQL cluster"
    w = World(stack)
    statuses: list[int | str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=15) as http:
            while not stop.is_set():
                body = {"kind": "face_image", "sha256": os.urandom(32).hex()}
                try:
                    r = http.post(f"{stack.url('consent')}/v1/samples", json=body, headers=w.seller)
                    statuses.append(r.status_code)
                    if r.status_code >= 400:
                        assert r.headers["content-type"].startswith("application/problem+json")
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)
                time.sleep(0.01)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    wait_until(lambda: statuses.count(201) >= 5, timeout=30, what="some successful requests", interval=0.2)
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    wait_until(
        lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0,
        timeout=60,
        what="PostgreSQL back",
        interval=0.2,
    )
    mark = len(statuses)
    wait_until(
        lambda: statuses[mark:].count(201) >= 5,
        timeout=60,
        what="requests succeeding again without restarting the services",
        interval=0.2,
    )
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "a request hung"
    # Only clean answers: created, or 503 problem JSON while the database was away. Never a 500.
    assert set(statuses) <= {201, 503}, sorted({str(s) for s in statuses})
    # The whole path still works after the restart, for every service.
    buyer, buyer_auth = w.licensee("After Restart")
    with Receiver("after") as rx:
        w.endpoint(buyer_auth, rx)
        consent_id, _ = licensed_consent(w, buyer)
        rid = revoke(w, consent_id)
        wait_until(
            lambda: rid in delivered(rx),
            timeout=90,
            what="a revocation delivered after the restart",
            interval=0.2,
        )
