"""Every metric named in the alerts and the Grafana dashboard is exported by the running services:
the eight processes run as in production (SQLite, the real broker), a revocation goes through to
two buyers' receivers, and each process's /metrics (and its probes) are scraped."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest

from consent_api.migrate import upgrade as consent_upgrade
from registry.migrate import upgrade as registry_upgrade
from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.embedded_broker import EmbeddedBroker, free_port
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.settings import RescindSettings
from revocation_worker.migrate import upgrade as worker_upgrade

from support.k8s import (
    ARGS,
    BIN,
    SERVICES,
    Exported,
    alert_rules,
    dashboard_exprs,
    missing_metrics,
    parse_exposition,
)
from support.wait import wait_until


class Buyer:
    """A buyer's webhook receiver on 127.0.0.1 answering `status` to every delivery."""

    def __init__(self, status: int) -> None:
        self.received: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.received.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Process:
    name: str
    argv: list[str]
    metrics_url: str
    popen: subprocess.Popen[bytes]
    log: Path


class Stack:
    """The three services' eight processes, as the Deployments run them, on SQLite and the broker."""

    def __init__(self, tmp: Path, broker: EmbeddedBroker) -> None:
        self.tmp = tmp
        self.procs: list[Process] = []
        run = uuid.uuid4().hex[:10]
        self.consent_topic = f"test.deploy-{run}.consent"
        self.ports = {svc: free_port() for svc in SERVICES}
        state = tmp / "state"
        self.key = ensure_dev_key(RescindSettings(state_dir=state).dev_auth_key_file)
        self.env = {
            **os.environ,
            "RESCIND_STATE_DIR": str(state),
            "RESCIND_LOG_LEVEL": "WARNING",
            "RESCIND_KAFKA_BOOTSTRAP": broker.bootstrap,
            "RESCIND_KAFKA_CONSENT_TOPIC": self.consent_topic,
            "RESCIND_KAFKA_NOTICE_TOPIC": f"test.deploy-{run}.notice",
            "RESCIND_KAFKA_LICENSE_TOPIC": f"test.deploy-{run}.license",
            "RESCIND_KAFKA_TOPIC_PARTITIONS": "2",
            "RESCIND_CONSENT_CONSUMER_GROUP": f"deploy-{run}-consent-api",
            "RESCIND_REGISTRY_CONSUMER_GROUP": f"deploy-{run}-registry",
            "RESCIND_WORKER_CONSUMER_GROUP": f"deploy-{run}-revocation-worker",
            "RESCIND_CONSENT_DATABASE_URL": f"sqlite:///{tmp / 'consent.db'}",
            "RESCIND_REGISTRY_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}",
            "RESCIND_WORKER_DATABASE_URL": f"sqlite:///{tmp / 'worker.db'}",
            "RESCIND_CONSENT_PORT": str(self.ports["consent-api"]),
            "RESCIND_REGISTRY_PORT": str(self.ports["registry"]),
            "RESCIND_WORKER_PORT": str(self.ports["revocation-worker"]),
            "RESCIND_CONSENT_PUBLIC_URL": self.url("consent-api"),
            "RESCIND_WORKER_PUBLIC_URL": self.url("revocation-worker"),
            "RESCIND_CONSENT_REGISTRY_URL": self.url("registry"),
            "RESCIND_WORKER_REGISTRY_URL": self.url("registry"),
            "RESCIND_CONSENT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RESCIND_WORKER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RESCIND_WORKER_ALLOW_NETWORKS": '["127.0.0.0/8"]',
            "RESCIND_WORKER_ALLOW_HTTP": "true",
            "RESCIND_WORKER_POLL_INTERVAL_SECONDS": "0.05",
            "RESCIND_WORKER_SWEEP_INTERVAL_SECONDS": "0.5",
            "RESCIND_WORKER_RETRY_SCHEDULE_SECONDS": "[0, 0.5, 1]",
            "RESCIND_REGISTRY_PROJECTION_WAIT_SECONDS": "20",
        }
        admin = make_admin(broker.bootstrap, "test-deploy-admin")
        try:
            ensure_topics(
                admin,
                [
                    self.consent_topic,
                    self.env["RESCIND_KAFKA_NOTICE_TOPIC"],
                    self.env["RESCIND_KAFKA_LICENSE_TOPIC"],
                ],
                partitions=2,
                replication_factor=1,
            )
        finally:
            admin.close()

    def url(self, svc: str) -> str:
        return f"http://127.0.0.1:{self.ports[svc]}"

    def start(self) -> None:
        # Migrations in this process (the `migrate` command is exercised by the process tests): on two
        # cores, every interpreter start counts.
        consent_upgrade(self.env["RESCIND_CONSENT_DATABASE_URL"])
        registry_upgrade(self.env["RESCIND_REGISTRY_DATABASE_URL"])
        worker_upgrade(self.env["RESCIND_WORKER_DATABASE_URL"])
        for svc, args in [
            ("consent-api", ["serve"]),
            ("consent-api", ["relay"]),
            ("consent-api", ["consumer"]),
            ("registry", ["serve"]),
            ("registry", ["relay"]),
            ("registry", ["consumer"]),
            ("revocation-worker", ["serve"]),
            ("revocation-worker", ARGS["intake"]),
            ("revocation-worker", ARGS["delivery"]),
        ]:
            command = args[-1]  # serve, relay, consumer, intake, delivery
            env = dict(self.env)
            if command == "serve":
                url = f"{self.url(svc)}/metrics"
            else:  # as the Deployments set it
                env["RESCIND_METRICS_PORT"] = str(free_port())
                url = f"http://127.0.0.1:{env['RESCIND_METRICS_PORT']}/metrics"
            log = self.tmp / f"{svc}-{command}.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(
                    [str(BIN / svc), *args], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            self.procs.append(Process(f"{svc} {command}", [svc, *args], url, popen, log))
        for p in self.procs:
            wait_until(
                lambda p=p: self.scrape_one(p) is not None,
                timeout=60,
                what=f"{p.name} to serve /metrics",
                interval=0.2,
            )
        for svc in SERVICES:
            wait_until(
                lambda svc=svc: self.get(f"{self.url(svc)}/readyz") == 200,
                timeout=60,
                what=f"{svc} ready",
                interval=0.2,
            )

    @staticmethod
    def get(url: str) -> int:
        try:
            return httpx.get(url, timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def scrape_one(self, p: Process) -> str | None:
        assert p.popen.poll() is None, (
            f"{p.name} exited with {p.popen.returncode}:\n{p.log.read_text()[-3000:]}"
        )
        try:
            r = httpx.get(p.metrics_url, timeout=5)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    def scrape(self) -> dict[str, Exported]:
        return {p.name: parse_exposition(self.scrape_one(p) or "") for p in self.procs}

    def token(self, role: str, sub: str) -> dict[str, str]:
        s = RescindSettings()
        tok = mint_token(self.key, sub=sub, role=role, issuer=s.auth_issuer, audience=s.auth_audience)
        return {"Authorization": f"Bearer {tok}"}

    def stop(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.terminate()
        for p in self.procs:
            try:
                p.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.name} =====\n" + "\n".join(p.log.read_text(errors="replace").splitlines()[-30:])
            for p in self.procs
        )


@pytest.fixture
def stack(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, broker)
    try:
        s.start()
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.stop()


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code < 400, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return dict(r.json())


def test_every_metric_in_the_alerts_and_the_dashboard_is_exported(
    rendered: dict[str, list[dict[str, Any]]], stack: Stack
) -> None:
    docs = rendered["prod"]
    rules = alert_rules(docs)
    assert len(rules) >= 7
    required = [r["expr"] for r in rules] + dashboard_exprs(docs)
    assert rendered["dev"] and alert_rules(rendered["dev"]) == rules

    # A revocation that reaches two buyers: one takes it, the other's endpoint is gone (410).
    http = httpx.Client(timeout=30)
    ops = stack.token("operator", "ops-deploy")
    seller = stack.token("subject", f"seller-{uuid.uuid4().hex[:8]}")
    consent, registry, worker = (stack.url(s) for s in SERVICES)
    sample = ok(
        http.post(f"{consent}/v1/samples", headers=seller, json={"kind": "face_image", "sha256": "ab" * 32})
    )
    grant = ok(
        http.post(
            f"{consent}/v1/consents",
            headers=seller,
            json={"sample_ids": [sample["id"]], "purposes": ["model_training"]},
        )
    )
    buyers = [Buyer(204), Buyer(410)]
    try:
        for buyer in buyers:
            lic = ok(http.post(f"{registry}/v1/licensees", headers=ops, json={"name": "Buyer"}))["id"]
            body = {"licensee_id": lic, "consent_id": grant["id"], "purpose": "model_training"}
            ok(http.post(f"{registry}/v1/licenses", headers=ops, json={**body, "sample_ids": [sample["id"]]}))
            ok(
                http.post(
                    f"{worker}/v1/endpoints", headers=stack.token("licensee", lic), json={"url": buyer.url}
                )
            )
        ok(http.post(f"{consent}/v1/consents/{grant['id']}/revoke", headers=seller))
        wait_until(
            lambda: all(b.received for b in buyers),
            timeout=30.0,
            what="both buyers to be called",
            interval=0.2,
        )
        # A record no consumer can decode goes to their dead-letter topics.
        producer = make_producer(stack.env["RESCIND_KAFKA_BOOTSTRAP"], "test-deploy-garbage")
        try:
            producer.send(stack.consent_topic, key=b"k", value=b"\xff not protobuf").get(timeout=10)
        finally:
            producer.close(timeout=5)

        last: dict[str, Any] = {}

        def all_exported() -> bool:
            last["scraped"] = scraped = stack.scrape()
            union: Exported = {}
            for exported in scraped.values():
                for name, series in exported.items():
                    union.setdefault(name, []).extend(series)
            last["missing"] = missing_metrics(required, union)
            return not last["missing"]

        try:
            wait_until(all_exported, timeout=30, what="every metric to be exported", interval=0.2)
        except AssertionError:
            raise AssertionError(f"not exported by any Rescind process: {last['missing']}") from None
    finally:
        for buyer in buyers:
            buyer.close()
    scraped = last["scraped"]
    # Each process serves its own series: the delivery metrics come from `revocation-worker worker
    # --role delivery` (its metrics port), the consumer's and the notice gauges from `--role intake`,
    # the revocations counter from `consent-api serve`.
    delivery, intake = scraped["revocation-worker delivery"], scraped["revocation-worker intake"]
    assert any(s.get("outcome") == "success" for s in delivery["rescind_webhook_attempts_total"])
    assert delivery["rescind_revocation_to_delivery_seconds_count"][0]["__value__"] >= 1
    assert any(
        s.get("reason") == "gone" and s["__value__"] >= 1
        for s in delivery["rescind_endpoints_disabled_total"]
    )
    assert any(s.get("service") == "revocation-worker" for s in intake["rescind_consumer_lag"])
    assert intake["rescind_revocations_resolved_total"][0]["__value__"] >= 1
    assert any(s.get("status") == "delivered" for s in intake["rescind_notices"])
    assert "rescind_consumer_lag" not in delivery and "rescind_webhook_attempts_total" in intake  # pre-set
    assert any(
        s.get("trigger") == "subject" for s in scraped["consent-api serve"]["rescind_revocations_total"]
    )
    assert any(
        s.get("service") == "consent-api" for s in scraped["consent-api relay"]["rescind_outbox_backlog"]
    )
    # The probes the Deployments point at, on the same port as /metrics: each process names the
    # loops it runs (its role's), and is ready (the delivery role without asking Kafka).
    loops = {
        "consent-api relay": {"relay"},
        "registry relay": {"relay"},
        "consent-api consumer": {"consumer"},
        "registry consumer": {"consumer"},
        "revocation-worker intake": {"consumer", "relay", "resolver"},
        "revocation-worker delivery": {"delivery"},
    }
    for p in stack.procs:
        if p.name in loops:
            base = p.metrics_url.removesuffix("/metrics")
            live = httpx.get(f"{base}/healthz", timeout=10)
            assert live.status_code == 200 and set(live.json()["loops"]) == loops[p.name], (p.name, live.text)
            ready = wait_until(
                lambda b=base: ready_checks(b), timeout=30.0, what=f"{p.name} ready", interval=0.2
            )
            kafka = {} if p.name.endswith("delivery") else {"kafka": "ok"}
            assert ready == {"database": "ok", **kafka}, p.name


def ready_checks(base: str) -> dict[str, str] | None:
    r = httpx.get(f"{base}/readyz", timeout=10)
    return dict(r.json()["checks"]) if r.status_code == 200 else None
