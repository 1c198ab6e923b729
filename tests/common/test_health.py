"""Liveness and readiness of the processes without an HTTP API (rescind_common.health).

- The staleness rule on values is in tests/unit/test_staleness.py; here, /healthz serving it.
- A real consumer on the real broker whose handler never returns: /healthz turns 503 naming it,
  and 200 again once it goes round.
- A database that accepts the connection and never answers: /readyz still answers, 503, and a
  check still hung is not started a second time.
- `consent-api relay`, `registry consumer` and `revocation-worker worker` as processes on
  PostgreSQL with RESCIND_METRICS_PORT set: /healthz, /readyz and /metrics answer; with the broker
  gone /readyz is 503 while /healthz stays 200 for longer than the stale window (the loops keep
  going round while they retry); the broker back, they are ready again.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from consent_api.migrate import upgrade as consent_upgrade
from registry.migrate import upgrade as registry_upgrade
from rescind_cli.processes import Launcher, free_ports, stack_env
from rescind_common.consumer import BatchHandler, EventConsumer
from rescind_common.db import make_engine, make_session_factory, ping
from rescind_common.embedded_broker import EmbeddedBroker, free_port
from rescind_common.health import HealthServer, Heartbeat
from rescind_common.kafka import (
    BOOTSTRAP_TIMEOUT_MS,
    broker_reachable,
    ensure_topics,
    make_admin,
    make_producer,
)
from revocation_worker.migrate import upgrade as worker_upgrade

from support.wait import wait_until


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10)
    except httpx.TransportError:
        return None


def status(url: str) -> int:
    r = get(url)
    return r.status_code if r is not None else 0


# -- the rule ------------------------------------------------------------------------------------


def test_healthz_names_the_stale_loop_and_its_age() -> None:
    now = [5000.0]
    relay, consumer = Heartbeat("relay"), Heartbeat("consumer")
    relay.last = consumer.last = now[0]
    server = HealthServer("127.0.0.1", 0, [relay, consumer], {}, stale_after=60, clock=lambda: now[0]).start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        now[0] += 30
        r = httpx.get(url)
        assert r.status_code == 200 and r.json() == {
            "status": "ok",
            "loops": {"relay": 30.0, "consumer": 30.0},
        }
        consumer.last = now[0]  # the consumer goes round, the relay does not
        now[0] += 45
        r = httpx.get(url)
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == 503 and body["title"] == "Service unavailable"
        assert body["stale"] == [{"loop": "relay", "age_seconds": 75.0}]
        assert "relay (75 s)" in body["detail"] and "consumer" not in body["detail"]
        assert httpx.get(f"http://127.0.0.1:{server.port}/nothing-here").status_code == 404
    finally:
        server.stop()


# -- a wedged loop -------------------------------------------------------------------------------


class StuckHandler(BatchHandler[bytes]):
    """Applies nothing until `release` is set: a call that does not return (a hung statement)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.release = threading.Event()
        self.entered = threading.Event()

    def decode(self, value: bytes | None) -> bytes:
        return value or b""

    def apply(self, session: Session, event: bytes) -> bool:
        return self.apply_batch(session, [event])[0]

    def apply_batch(self, session: Session, events: Sequence[bytes]) -> list[bool]:
        self.entered.set()
        self.release.wait(120)
        return [True] * len(events)


def test_a_wedged_consumer_fails_healthz_until_it_goes_round_again(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"test.health-{uuid.uuid4().hex[:10]}"
    admin = make_admin(broker.bootstrap, "test-health-admin")
    try:
        ensure_topics(admin, [topic], partitions=1, replication_factor=1)
    finally:
        admin.close()
    engine = make_engine(f"sqlite:///{tmp_path / 'consumer.db'}")
    handler = StuckHandler(make_session_factory(engine))
    consumer = EventConsumer(
        service="health-test",
        bootstrap=broker.bootstrap,
        group_id=f"health-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        handler=handler,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    server = HealthServer(
        "127.0.0.1",
        0,
        [consumer.heartbeat],
        {"database": consumer.database_reachable},
        stale_after=3,
    ).start()
    url = f"http://127.0.0.1:{server.port}"
    thread.start()
    try:
        wait_until(
            lambda: status(f"{url}/healthz") == 200,
            timeout=60.0,
            what="the consumer to be live",
            interval=0.1,
        )
        producer = make_producer(broker.bootstrap, "test-health")
        try:
            producer.send(topic, key=b"k", value=b"event").get(timeout=10)
        finally:
            producer.close(timeout=5)
        assert handler.entered.wait(60), "the consumer never got the record"

        def stale() -> list[dict[str, Any]] | None:
            r = get(f"{url}/healthz")
            return r.json()["stale"] if r is not None and r.status_code == 503 else None

        (entry,) = wait_until(
            stale, timeout=60.0, what="/healthz to report the wedged consumer", interval=0.1
        )
        assert entry["loop"] == "consumer" and entry["age_seconds"] > 3
        # Liveness is not readiness: the database is fine.
        assert status(f"{url}/readyz") == 200
        handler.release.set()
        wait_until(
            lambda: status(f"{url}/healthz") == 200,
            timeout=60.0,
            what="the consumer to be live again",
            interval=0.1,
        )
    finally:
        handler.release.set()
        consumer.stop_event.set()
        thread.join(timeout=20)
        server.stop()
        engine.dispose()


# -- a hung database -----------------------------------------------------------------------------


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung PostgreSQL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_readyz_answers_when_the_database_hangs(broker: EmbeddedBroker, silent_database: int) -> None:
    engine = make_engine(f"postgresql://rescind@127.0.0.1:{silent_database}/rescind")
    server = HealthServer(
        "127.0.0.1",
        0,
        [Heartbeat("relay")],
        {
            "database": functools.partial(ping, engine),
            "kafka": lambda: broker_reachable(broker.bootstrap),
        },
        stale_after=60,
    ).start()
    try:
        for _ in range(2):
            r = httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=30)
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["checks"] == {"database": "timeout", "kafka": "ok"}
            assert body["detail"] == "Not ready: database."
            # The second probe waits on the check still hung from the first, not on a new one.
            hung = [t for t in threading.enumerate() if t.name == "readyz-database"]
            assert len(hung) <= 1
        # Liveness does not depend on the database.
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
    finally:
        server.stop()
        engine.dispose()


# -- the processes -------------------------------------------------------------------------------


# RESCIND_HEALTH_STALE_SECONDS for the processes below: above the Kafka clients' bootstrap timeout
# (a relay building its clients while the broker is away), the longest wait of a retrying loop.
STALE = 15


def test_background_processes_serve_probes_and_readiness_follows_the_broker(
    pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    assert STALE * 1000 > BOOTSTRAP_TIMEOUT_MS
    urls = {
        "consent": pg_database("consent"),
        "registry": pg_database("registry"),
        "worker": pg_database("worker"),
    }
    consent_upgrade(urls["consent"])
    registry_upgrade(urls["registry"])
    worker_upgrade(urls["worker"])
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        **stack_env({}, bootstrap=broker.bootstrap, state=tmp_path / "state", db_urls=urls),
        "RESCIND_LOG_LEVEL": "INFO",
        "RESCIND_KAFKA_TOPIC_PARTITIONS": "1",
        "RESCIND_REGISTRY_CONSUMER_GROUP": f"health-{run}-registry",
        "RESCIND_WORKER_CONSUMER_GROUP": f"health-{run}-worker",
        "RESCIND_WORKER_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
        "RESCIND_HEALTH_STALE_SECONDS": str(STALE),
    }
    # The loops each serve, and the launcher's command that runs them.
    commands = {
        "consent-api relay": ({"relay"}, "consent-relay"),
        "registry consumer": ({"consumer"}, "registry-consumer"),
        "revocation-worker worker": ({"consumer", "relay", "resolver", "delivery"}, "worker"),
    }
    launcher = Launcher(env, {}, log_dir=tmp_path)
    ports = free_ports(commands, taken={broker.port})
    try:
        for name, (_, command) in commands.items():
            launcher.start(command, env={"RESCIND_METRICS_PORT": str(ports[name])})

        def probes(name: str, path: str) -> httpx.Response | None:
            launcher.check_running([commands[name][1]])
            return get(f"http://127.0.0.1:{ports[name]}{path}")

        def answer(name: str, path: str, code: int) -> dict[str, Any] | None:
            r = probes(name, path)
            return r.json() if r is not None and r.status_code == code else None

        for name, (loops, _) in commands.items():
            live = wait_until(
                lambda n=name: answer(n, "/healthz", 200), timeout=60.0, what=f"{name} live", interval=0.1
            )
            assert set(live["loops"]) == loops, live
            ready = wait_until(
                lambda n=name: answer(n, "/readyz", 200), timeout=60.0, what=f"{name} ready", interval=0.1
            )
            assert ready["checks"] == {"database": "ok", "kafka": "ok"}, ready
        # /metrics is still served there, as Prometheus scrapes it.
        metrics = probes("consent-api relay", "/metrics")
        assert metrics is not None and 'rescind_outbox_backlog{service="consent-api"}' in metrics.text

        broker.stop()

        for name in commands:
            body = wait_until(
                lambda n=name: answer(n, "/readyz", 503),
                timeout=60.0,
                what=f"{name} not ready without the broker",
                interval=0.1,
            )
            assert body["checks"] == {"database": "ok", "kafka": "down"}, body
            assert body["status"] == 503 and body["detail"] == "Not ready: kafka."
        # The loops retry the outage and keep going round: alive for longer than the stale window.
        until = time.monotonic() + STALE + 1
        while time.monotonic() < until:
            for name in commands:
                assert answer(name, "/healthz", 200), (name, probes(name, "/healthz"))
            time.sleep(0.5)

        broker.start()  # the same port: the processes' bootstrap
        for name in commands:
            wait_until(
                lambda n=name: answer(n, "/readyz", 200),
                timeout=60.0,
                what=f"{name} ready again",
                interval=0.1,
            )
            assert answer(name, "/healthz", 200), name
    except BaseException:
        print(launcher.logs(60))
        raise
    finally:
        launcher.stop_all(timeout=30)
        codes = {
            name: launcher.procs[c].popen.returncode
            for name, (_, c) in commands.items()
            if c in launcher.procs
        }
        broker.stop()
    assert codes == dict.fromkeys(commands, 0)
