"""End to end, as users run it: consent-api, registry and revocation-worker as processes, on
PostgreSQL and a real broker, with buyers' receivers that verify every delivery with the
standardwebhooks library."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rescind_cli.demo import Receiver
from revocation_worker.delivery.loop import lease_for

from support.stack import Stack, running_on_postgres
from support.wait import WaitTimeout, wait_until


@pytest.fixture(scope="module")
def stack(pg_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_on_postgres("e2e", pg_database, tmp_path_factory.mktemp("e2e")) as s:
        yield s


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code < 400, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return dict(r.json())


class World:
    """A seller, an operator and licensees talking to the running stack."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(timeout=30)
        self.seller = stack.token("subject", f"seller-{uuid.uuid4().hex[:8]}")
        self.ops = stack.token("operator", "ops-e2e")

    def samples(self, n: int) -> list[dict[str, Any]]:
        body = {
            "samples": [
                {"kind": "face_image", "sha256": hashlib.sha256(uuid.uuid4().bytes).hexdigest()}
                for _ in range(n)
            ]
        }
        return ok(
            self.http.post(f"{self.stack.url('consent')}/v1/samples/batch", json=body, headers=self.seller)
        )["items"]

    def grant(self, sample_ids: list[str]) -> dict[str, Any]:
        return ok(
            self.http.post(
                f"{self.stack.url('consent')}/v1/consents",
                headers=self.seller,
                json={"sample_ids": sample_ids, "purposes": ["model_training"]},
            )
        )

    def licensee(self, name: str) -> tuple[str, dict[str, str]]:
        lic = ok(
            self.http.post(
                f"{self.stack.url('registry')}/v1/licensees", headers=self.ops, json={"name": name}
            )
        )
        return lic["id"], self.stack.token("licensee", lic["id"])

    def post_license(self, licensee_id: str, consent_id: str, sample_ids: list[str]) -> httpx.Response:
        """The operator records a license (409 while the registry does not know the consent yet)."""
        return self.http.post(
            f"{self.stack.url('registry')}/v1/licenses",
            headers=self.ops,
            json={
                "licensee_id": licensee_id,
                "consent_id": consent_id,
                "purpose": "model_training",
                "sample_ids": sample_ids,
            },
        )

    def license(self, licensee_id: str, consent_id: str, sample_ids: list[str]) -> dict[str, Any]:
        return ok(self.post_license(licensee_id, consent_id, sample_ids))

    def endpoint(self, licensee_auth: dict[str, str], rx: Receiver) -> None:
        ep = ok(
            self.http.post(
                f"{self.stack.url('worker')}/v1/endpoints", headers=licensee_auth, json={"url": rx.url}
            )
        )
        rx.secret = ep["secret"]


def test_revocation_reaches_every_buyer_and_the_seller_sees_it(stack: Stack) -> None:
    w = World(stack)
    samples = w.samples(3)
    ids = [s["id"] for s in samples]
    sha = {s["id"]: s["sha256"] for s in samples}
    consent = w.grant(ids)
    acme, acme_auth = w.licensee("Acme Vision")
    bolt, bolt_auth = w.licensee("Bolt Voice")
    acme_license = w.license(acme, consent["id"], ids[:2])
    w.license(bolt, consent["id"], ids[1:])
    model = ok(
        w.http.post(
            f"{stack.url('registry')}/v1/models",
            headers=acme_auth,
            json={"name": "face-embedder", "version": "3", "license_ids": [acme_license["id"]]},
        )
    )
    with Receiver("acme") as acme_rx, Receiver("bolt") as bolt_rx:
        w.endpoint(acme_auth, acme_rx)
        w.endpoint(bolt_auth, bolt_rx)
        revocation = ok(
            w.http.post(f"{stack.url('consent')}/v1/consents/{consent['id']}/revoke", headers=w.seller)
        )

        wait_until(
            lambda: acme_rx.verified and bolt_rx.verified,
            timeout=90,
            what="both buyers verified a webhook",
            interval=0.2,
        )
        assert acme_rx.rejected == 0 and bolt_rx.rejected == 0
        acme_data = acme_rx.verified[0]["payload"]["data"]
        bolt_data = bolt_rx.verified[0]["payload"]["data"]
        assert acme_rx.verified[0]["payload"]["type"] == "revocation.notice"
        assert acme_data["revocation_id"] == revocation["id"] == bolt_data["revocation_id"]
        assert acme_data["licensee_id"] == acme and bolt_data["licensee_id"] == bolt
        assert {(s["sample_id"], s["sha256"]) for s in acme_data["samples"]} == {(i, sha[i]) for i in ids[:2]}
        assert {s["sample_id"] for s in bolt_data["samples"]} == set(ids[1:])
        assert [m["model_id"] for m in acme_data["models"]] == [model["id"]]
        assert bolt_data["models"] == []
        assert acme_data["deadline"] > acme_rx.verified[0]["payload"]["timestamp"]

        # The buyer sees the same notice through the API (delivered once the worker has recorded the
        # POST's outcome, just after the buyer answered it) and acknowledges it.
        def delivered_notice() -> dict[str, Any] | None:
            got = ok(
                w.http.get(f"{stack.url('worker')}/v1/notices/{acme_data['notice_id']}", headers=acme_auth)
            )
            return got if got["status"] == "delivered" else None

        notice = wait_until(delivered_notice, timeout=30, what="the notice to read delivered", interval=0.2)
        assert notice["id"] == acme_data["notice_id"]
        ok(
            w.http.post(
                f"{stack.url('worker')}/v1/notices/{acme_data['notice_id']}/ack",
                headers=acme_auth,
                json={"status": "completed", "models": [{"model_id": model["id"], "action": "unlearned"}]},
            )
        )
        # Another buyer cannot read or acknowledge it.
        r = w.http.get(f"{stack.url('worker')}/v1/notices/{acme_data['notice_id']}", headers=bolt_auth)
        assert r.status_code == 404

    def seller_view() -> dict[str, str] | None:
        rev = ok(w.http.get(f"{stack.url('consent')}/v1/revocations/{revocation['id']}", headers=w.seller))
        statuses = {n["licensee_id"]: n["status"] for n in rev["notices"]}
        return statuses if statuses == {acme: "acknowledged", bolt: "delivered"} else None

    wait_until(
        seller_view, timeout=60, what="the seller to see one acknowledged, one delivered", interval=0.2
    )
    # The seller's access export names who received which samples (from the registry).
    export = ok(
        w.http.post(f"{stack.url('consent')}/v1/rights-requests", headers=w.seller, json={"type": "access"})
    )
    recipients = export["export"]["recipients"]
    assert recipients["status"] == "ok"
    got = {r["licensee_id"]: r["sample_ids"] for r in recipients["licensees"]}
    assert got == {acme: sorted(ids[:2]), bolt: sorted(ids[1:])}
    acme_entry = next(r for r in recipients["licensees"] if r["licensee_id"] == acme)
    assert [m["model_id"] for m in acme_entry["models"]] == [model["id"]]
    # The registry marked both licenses revoked.
    licenses = ok(w.http.get(f"{stack.url('registry')}/v1/licenses", headers=acme_auth))["items"]
    assert [lic["status"] for lic in licenses] == ["revoked"]

    # The seller's view times each step; the signed proof, fetched with the CLI, verifies offline
    # against a saved JWKS and places every step on the seller's audit chain.
    import json
    import subprocess
    import sys

    view = {n["licensee_id"]: n for n in seller_view_full(w, stack, revocation["id"])}
    assert all(n["told_at"] and n["delivered_at"] for n in view.values()), view
    rescind = str(Path(sys.executable).parent / "rescind")
    proof_file, jwks_file = stack.tmp / "proof.jws", stack.tmp / "jwks.json"
    jwks_file.write_text(json.dumps(ok(w.http.get(f"{stack.url('consent')}/.well-known/jwks.json"))))
    for args in (
        ["proof", "get", revocation["id"], "--out", str(proof_file), "--url", stack.url("consent")],
        ["proof", "verify", str(proof_file), "--jwks", str(jwks_file), "--json"],
    ):
        out = subprocess.run([rescind, *args], env=stack.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    claims = json.loads(out.stdout)
    assert claims["revocation"]["id"] == revocation["id"] and claims["sample_count"] == 3
    steps = {n["licensee_id"]: [s["step"] for s in n["audit"]] for n in claims["notices"]}
    assert steps == {acme: ["told", "delivered", "answered"], bolt: ["told", "delivered"]}


def seller_view_full(w: Any, stack: Stack, revocation_id: str) -> list[dict[str, Any]]:
    rev = ok(w.http.get(f"{stack.url('consent')}/v1/revocations/{revocation_id}", headers=w.seller))
    return list(rev["notices"])


def test_licenses_recorded_while_the_registry_lags_behind_a_revocation_are_told_never_silent(
    stack: Stack,
) -> None:
    """The lag window: the registry's consumer is stopped (SIGSTOP), so its projection still calls
    the consent active after the seller revoked it. One buyer's license is recorded right after the
    revocation, another's once the worker has already resolved it without them: the registry
    accepts both. When the projection catches up, both buyers get a verified webhook for the
    revocation and the seller sees every buyer told; a license asked for then is refused."""
    w = World(stack)
    ids = [s["id"] for s in w.samples(2)]
    consent = w.grant(ids)["id"]
    first, first_auth = w.licensee("Licensed before the revocation")
    early, early_auth = w.licensee("Licensed right after it")
    late, late_auth = w.licensee("Licensed after its resolution")
    w.license(first, consent, ids)  # the projection has the grant: nothing of it is in flight
    url = stack.url("consent")

    def seller_view(revocation_id: str) -> dict[str, Any]:
        return ok(w.http.get(f"{url}/v1/revocations/{revocation_id}", headers=w.seller))

    with Receiver("first") as first_rx, Receiver("early") as early_rx, Receiver("late") as late_rx:
        for auth, rx in ((first_auth, first_rx), (early_auth, early_rx), (late_auth, late_rx)):
            w.endpoint(auth, rx)
        stack.pause("registry-consumer")
        try:
            revocation = ok(w.http.post(f"{url}/v1/consents/{consent}/revoke", headers=w.seller))["id"]
            early_license = w.license(early, consent, ids)  # accepted: the projection lags
            wait_until(
                lambda: first in {n["licensee_id"] for n in seller_view(revocation)["notices"]},
                timeout=90,
                what="the worker to resolve the revocation (the seller sees the first buyer told)",
                interval=0.2,
            )
            late_license = w.license(late, consent, ids)  # accepted too: still lagging
            assert early_license["status"] == late_license["status"] == "active"
        finally:
            stack.resume("registry-consumer")

        def told(rx: Receiver) -> list[dict[str, Any]]:
            return [v for v in rx.verified if v["payload"]["data"]["revocation_id"] == revocation]

        wait_until(
            lambda: all(told(rx) for rx in (first_rx, early_rx, late_rx)),
            timeout=120,
            what="every buyer verified a webhook for the revocation",
            interval=0.2,
        )
        for rx, licensee in ((first_rx, first), (early_rx, early), (late_rx, late)):
            assert rx.rejected == 0
            data = told(rx)[0]["payload"]["data"]
            assert data["licensee_id"] == licensee and {s["sample_id"] for s in data["samples"]} == set(ids)
            # One notice per buyer: redeliveries only (same webhook-id).
            assert len({v["webhook_id"] for v in told(rx)}) == 1

    def everyone_delivered() -> dict[str, Any] | None:
        got = seller_view(revocation)
        statuses = {n["licensee_id"]: n["status"] for n in got["notices"]}
        done = statuses == dict.fromkeys((first, early, late), "delivered") and got["status"] == "delivered"
        return got if done else None

    wait_until(everyone_delivered, timeout=60, what="the seller to see all three buyers told", interval=0.2)
    # The projection has caught up: the late licenses turned revoked, and a new one is refused.
    for license_ in (early_license, late_license):
        got = ok(w.http.get(f"{stack.url('registry')}/v1/licenses/{license_['id']}", headers=w.ops))
        assert got["status"] == "revoked"
    another, _ = w.licensee("Licensed once the registry knows")
    r = w.http.post(
        f"{stack.url('registry')}/v1/licenses",
        headers=w.ops,
        json={"licensee_id": another, "consent_id": consent, "purpose": "model_training", "sample_ids": ids},
    )
    assert r.status_code == 409, r.text
    assert any(e["field"] == "body.consent_id" for e in r.json()["errors"]), r.text


def test_worker_sigkilled_during_a_burst_loses_no_notice(stack: Stack, tmp_path: Path) -> None:
    w = World(stack)
    buyer, buyer_auth = w.licensee("Burst Buyer")
    with Receiver("burst") as rx:
        w.endpoint(buyer_auth, rx)
        consents = []
        for _ in range(20):
            sid = [s["id"] for s in w.samples(1)]
            consent = w.grant(sid)
            w.license(buyer, consent["id"], sid)
            consents.append(consent["id"])
        revocations = []
        for i, cid in enumerate(consents):
            revocations.append(
                ok(w.http.post(f"{stack.url('consent')}/v1/consents/{cid}/revoke", headers=w.seller))["id"]
            )
            if i == 5:
                wait_until(
                    lambda: rx.verified, timeout=60, what="some deliveries before the kill", interval=0.2
                )
                stack.kill("worker")
        stack.start("worker")

        def all_delivered() -> bool:
            got = {v["payload"]["data"]["revocation_id"] for v in rx.verified}
            return got >= set(revocations)

        try:
            # A delivery the killed worker had leased but not recorded is retried when its lease
            # expires (lease_for: two minutes by default), so allow that and some more.
            wait_until(
                all_delivered,
                timeout=lease_for(10).total_seconds() + 90,
                what="every revocation delivered after the restart",
                interval=0.2,
            )
        except WaitTimeout:
            # Say where the missing ones are stuck: their notices and deliveries as the worker has them.
            got = {v["payload"]["data"]["revocation_id"] for v in rx.verified}
            notices = w.http.get(
                f"{stack.url('worker')}/v1/operator/notices",
                params={"licensee_id": buyer, "limit": 100},
                headers=w.ops,
            ).json()
            stuck = [n for n in notices.get("items", []) if n["revocation_id"] not in got]
            missing = set(revocations) - got
            raise AssertionError(
                f"{len(missing)} revocations never delivered: {missing}; stuck: {stuck}"
            ) from None
        assert rx.rejected == 0
        # Duplicates are only redeliveries of the same notice, with the same webhook-id.
        by_id: dict[str, set[str]] = {}
        for v in rx.verified:
            by_id.setdefault(v["webhook_id"], set()).add(v["payload"]["data"]["notice_id"])
        assert all(len(n) == 1 for n in by_id.values())
        assert len(by_id) == len(revocations)


def test_operator_cli_against_the_running_stack(stack: Stack) -> None:
    import json
    import subprocess
    import sys

    rescind = str(Path(sys.executable).parent / "rescind")

    def cli(*args: str) -> Any:
        out = subprocess.run([rescind, *args], env=stack.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    created = cli("licensee", "create", "--name", "Cli Buyer", "--url", stack.url("registry"))
    assert created["id"].startswith("lic_")
    assert created["id"] in {
        item["id"] for item in cli("licensee", "list", "--url", stack.url("registry"))["items"]
    }
    assert "items" in cli("endpoints", "failing", "--url", stack.url("worker"))
    backlog = cli("dead-letters", "list", "--url", stack.url("worker"))
    assert backlog["total"] == 0
    assert cli("dead-letters", "redrive", "--url", stack.url("worker")) == {"redriven": 0}
    # The audit chain of everything the other tests did is intact.
    out = subprocess.run(
        [
            rescind,
            "audit",
            "verify",
            "--url",
            stack.url("consent"),
            "--registry-url",
            stack.url("registry"),
            "--worker-url",
            stack.url("worker"),
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True, out.stdout + out.stderr


def test_a_purpose_withdrawal_tells_the_buyer_which_license_purpose_and_models(stack: Stack) -> None:
    """The seller withdraws one purpose: the buyer's webhook says purpose_withdrawal, names the
    license and the purpose, and the model trained on that license, not the one trained on the
    license of the purpose still consented."""
    w = World(stack)
    ids = [s["id"] for s in w.samples(2)]
    consent = ok(
        w.http.post(
            f"{stack.url('consent')}/v1/consents",
            headers=w.seller,
            json={"sample_ids": ids, "purposes": ["model_training", "evaluation"]},
        )
    )
    acme, acme_auth = w.licensee("Acme Exact")
    training = w.license(acme, consent["id"], ids)
    evaluation = ok(
        w.http.post(
            f"{stack.url('registry')}/v1/licenses",
            headers=w.ops,
            json={
                "licensee_id": acme,
                "consent_id": consent["id"],
                "purpose": "evaluation",
                "sample_ids": ids,
            },
        )
    )

    def model(name: str, license_id: str) -> str:
        body = {"name": name, "version": "1", "license_ids": [license_id]}
        return str(ok(w.http.post(f"{stack.url('registry')}/v1/models", headers=acme_auth, json=body))["id"])

    trained = model("trained", training["id"])
    model("evaluated", evaluation["id"])
    with Receiver("acme-exact") as rx:
        w.endpoint(acme_auth, rx)
        revocation = ok(
            w.http.post(
                f"{stack.url('consent')}/v1/revocations",
                headers=w.seller,
                json={"scope": "purpose", "purpose": "model_training"},
            )
        )
        wait_until(lambda: rx.verified, timeout=90, what="the buyer verified a webhook", interval=0.2)
        data = rx.verified[0]["payload"]["data"]
    assert data["revocation_id"] == revocation["id"]
    assert (data["trigger"], data["licensee_name"]) == ("purpose_withdrawal", "Acme Exact")
    assert data["licenses"] == [
        {
            "license_id": training["id"],
            "consent_id": consent["id"],
            "purposes": ["model_training"],
            "trigger": "purpose_withdrawal",
            "sample_count": 2,
        }
    ]
    assert [(m["model_id"], m["scope"], m["shard_ids"], m["license_ids"]) for m in data["models"]] == [
        (trained, "whole", [], [training["id"]])
    ]
