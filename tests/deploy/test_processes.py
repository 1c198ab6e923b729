"""Every metric named in the alerts and the Grafana dashboard is exported by the running services:
every process runs as in production (SQLite, the real broker), a revocation goes through to
two buyers' receivers, and each process's /metrics (and its probes) are scraped."""

from __future__ import annotations

import base64
import os
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
from rescind_cli.processes import (
    COMMANDS,
    SERVICES,
    Launcher,
    free_ports,
    sqlite_urls,
    stack_env,
    stack_names,
)
from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.embedded_broker import EmbeddedBroker
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.settings import RescindSettings
from revocation_worker.migrate import upgrade as worker_upgrade

from support.k8s import (
    Exported,
    alert_rules,
    dashboard_exprs,
    missing_metrics,
    parse_exposition,
)
from support.wait import wait_until

KEYS = list(SERVICES)  # consent, registry, worker


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


@dataclass(frozen=True)
class Process:
    """One of the stack's processes as the test names it (`<service> <command>`), and where it
    serves /metrics."""

    name: str
    command: str  # its name among the launcher's COMMANDS
    metrics_url: str
    metrics_port: int | None  # RESCIND_METRICS_PORT, for a process without an API


class Stack:
    """The three services' processes as the Deployments run them (each API's `serve`, every loop in
    a process of its own with /metrics on its own port, the worker split into its two roles), started
    by the launcher of `make run` on SQLite and the broker, with topics, consumer groups and secrets
    of their own."""

    def __init__(self, tmp: Path, broker: EmbeddedBroker) -> None:
        run = uuid.uuid4().hex[:10]
        self.consent_topic = f"test.deploy-{run}.consent"
        ports = free_ports(KEYS, taken={broker.port})
        state = tmp / "state"
        self.key = ensure_dev_key(RescindSettings(state_dir=state).dev_auth_key_file)
        self.db_urls = sqlite_urls(tmp)
        self.env = {
            **os.environ,
            **stack_env(ports, bootstrap=broker.bootstrap, state=state, db_urls=self.db_urls),
            "RESCIND_LOG_LEVEL": "WARNING",
            "RESCIND_KAFKA_CONSENT_TOPIC": self.consent_topic,
            "RESCIND_KAFKA_NOTICE_TOPIC": f"test.deploy-{run}.notice",
            "RESCIND_KAFKA_LICENSE_TOPIC": f"test.deploy-{run}.license",
            "RESCIND_KAFKA_TOPIC_PARTITIONS": "2",
            "RESCIND_CONSENT_CONSUMER_GROUP": f"deploy-{run}-consent-api",
            "RESCIND_REGISTRY_CONSUMER_GROUP": f"deploy-{run}-registry",
            "RESCIND_WORKER_CONSUMER_GROUP": f"deploy-{run}-revocation-worker",
            "RESCIND_CONSENT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RESCIND_WORKER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RESCIND_WORKER_POLL_INTERVAL_SECONDS": "0.05",
            "RESCIND_WORKER_SWEEP_INTERVAL_SECONDS": "0.5",
            "RESCIND_WORKER_RETRY_SCHEDULE_SECONDS": "[0, 0.5, 1]",
            "RESCIND_REGISTRY_PROJECTION_WAIT_SECONDS": "20",
        }
        self.launcher = Launcher(self.env, ports, log_dir=tmp)
        names = stack_names("split")
        loops = [name for name in names if COMMANDS[name].args != ("serve",)]
        metrics_ports = free_ports(loops, taken={broker.port, *ports.values()})
        self.procs: list[Process] = []
        for name in names:
            command, port = COMMANDS[name], metrics_ports.get(name)
            base = self.url(command.service) if port is None else f"http://127.0.0.1:{port}"
            label = f"{SERVICES[command.service].name} {command.args[-1]}"  # e.g. "registry relay"
            self.procs.append(Process(label, name, f"{base}/metrics", port))
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

    def url(self, service: str) -> str:
        """An API's base URL, by service key (consent, registry, worker)."""
        return self.launcher.url(service)

    def start(self) -> None:
        # Migrations in this process (the `migrate` command is exercised by the process tests): on two
        # cores, every interpreter start counts.
        consent_upgrade(self.db_urls["consent"])
        registry_upgrade(self.db_urls["registry"])
        worker_upgrade(self.db_urls["worker"])
        for p in self.procs:
            # As the Deployments set it: a process without an API serves /metrics on a port of its own.
            env = None if p.metrics_port is None else {"RESCIND_METRICS_PORT": str(p.metrics_port)}
            self.launcher.start(p.command, env=env)
        for p in self.procs:
            self.launcher.wait_http(f"{p.name} /metrics", p.metrics_url)
        self.launcher.wait_ready()

    def scrape_one(self, p: Process) -> str | None:
        self.launcher.check_running([p.command])
        try:
            r = httpx.get(p.metrics_url, timeout=5)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    def scrape(self) -> dict[str, Exported]:
        return {p.name: parse_exposition(self.scrape_one(p) or "") for p in self.procs}

    def token(self, role: str, sub: str) -> dict[str, str]:
        s = RescindSettings()
        tok = mint_token(self.key, sub=sub, role=role, issuer=s.auth_issuer, audience=s.token_audiences)
        return {"Authorization": f"Bearer {tok}"}

    def stop(self) -> None:
        self.launcher.stop_all()

    def logs(self) -> str:
        return self.launcher.logs(30)


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
    consent, registry, worker = (stack.url(key) for key in KEYS)
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
