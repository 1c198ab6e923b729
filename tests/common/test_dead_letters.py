"""Dead-lettered consent events are not silent, and an operator can put them back.

Real broker (Tansu), the registry's real consumer and projection on real PostgreSQL, the `rescind`
CLI through its `main()`. The registry's database refuses to record a revocation (a trigger standing
in for a broken migration or a revoked grant); the consumer retries, gives up and dead-letters the
`ConsentRevoked`; the registry goes on licensing the withdrawn consent. The operator is paged
(metric by event type, the alert, an ERROR line with the event id), lists the dead letter, fixes
the database, replays it, and the registry refuses the consent from then on.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from registry.main import create_app
from registry.projection.models import ProcessedEvent, ProjectedConsent
from rescind_cli.main import main as rescind
from rescind_common import dead_letters as dl
from rescind_common.consumer import BatchHandler, EventConsumer
from rescind_common.db import make_engine, make_session_factory
from rescind_common.embedded_broker import EmbeddedBroker, free_port
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

from support.helpers import assert_problem, auth
from support.kafka import read_topic
from support.registry import ConsumerThread, Projection, make_registry_settings, new_registry_db
from support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "k8s" / "base" / "monitoring" / "alerts.yaml"
TRAINING = "model_training"
WAIT = 30.0

# Stands in for whatever makes the registry's database refuse one kind of write every time (a
# migration half applied, a privilege revoked): the consumer's retries cannot get past it.
REFUSE_REVOCATIONS = """
CREATE FUNCTION refuse_revocation() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'projected_consents is read-only during maintenance'; END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_revocation BEFORE UPDATE ON projected_consents
FOR EACH ROW WHEN (NEW.status <> OLD.status) EXECUTE FUNCTION refuse_revocation();
"""


def create_topic(bootstrap: str, topic: str) -> None:
    admin = make_admin(bootstrap, "test-dead-letters-admin")
    try:
        ensure_topics(admin, [topic], partitions=1, replication_factor=1)
    finally:
        admin.close()


def publish_as_relay(bootstrap: str, topic: str, events: Sequence[pb.ConsentEvent]) -> None:
    """As consent-api's outbox relay publishes: keyed by subject, with the event-id/-type headers."""
    producer = make_producer(bootstrap, "test-dead-letters")
    try:
        for event in events:
            producer.send(
                topic,
                key=event.subject_id.encode(),
                value=event.SerializeToString(),
                headers=[
                    (dl.EVENT_ID, event.event_id.encode()),
                    (dl.EVENT_TYPE, str(event.WhichOneof("payload")).encode()),
                    ("content-type", b"application/x-protobuf"),
                ],
            )
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)


def exported(client: TestClient, name: str, **labels: str) -> float | None:
    """The value of one series on the registry's /metrics (what Prometheus scrapes), or None."""
    body = client.get("/metrics").text
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@dataclass
class Cli:
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> Any:
        """`rescind <args>`; its JSON output (exit code 0 asserted)."""
        self.capsys.readouterr()
        code = rescind(list(args))
        out = self.capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)


@pytest.fixture
def cli(broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("RESCIND_KAFKA_BOOTSTRAP", broker.bootstrap)
    return Cli(capsys)


def withdrawal_alert() -> dict[str, Any]:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["spec"]["groups"] for r in g["rules"]]
    (rule,) = [r for r in rules if "rescind_dead_letter_events_total" in r["expr"]]
    return dict(rule)


def test_a_dead_lettered_revocation_pages_and_a_replay_applies_it(
    broker: EmbeddedBroker,
    pg_database: Callable[[str], str],
    tmp_path: Path,
    state_dir: Path,
    token: Any,
    cli: Cli,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = f"test.dlq.{uuid.uuid4().hex[:12]}"
    dlq = dl.dead_letter_topic(topic, "registry")
    settings = make_registry_settings(
        new_registry_db("postgresql", pg_database, tmp_path),
        state_dir,
        kafka_bootstrap=broker.bootstrap,
        kafka_consent_topic=topic,
        kafka_topic_partitions=1,
    )
    engine = make_engine(settings.registry_database_url, pool_size=2)
    sessions = make_session_factory(engine)
    projection = Projection(sessions)
    operator = auth(token("operator", sub="ops-dlq"))
    create_topic(broker.bootstrap, topic)

    subject, samples = projection.samples(2)
    consent = projection.grant(subject, samples)
    revoke = Projection.revoke_event(subject, consent, samples, [TRAINING], ended=True)
    with sessions() as session, session.begin():
        session.execute(text(REFUSE_REVOCATIONS))

    caplog.set_level(logging.ERROR, logger="rescind_common.consumer")
    consumer = ConsumerThread(settings, max_retries=1, retry_backoff=0.05)
    try:
        with TestClient(create_app(settings)) as registry:
            lic = registry.post("/v1/licensees", json={"name": "Acme AI"}, headers=operator).json()["id"]
            body = {"licensee_id": lic, "consent_id": consent, "purpose": TRAINING, "sample_ids": samples}
            series = {"service": "registry", "topic": topic, "event_type": "consent_revoked"}
            # The series exists before anything is dead-lettered: increase() sees the first one.
            assert exported(registry, "rescind_dead_letter_events_total", **series) == 0

            consumer.start()
            publish_as_relay(broker.bootstrap, topic, [revoke])
            wait_until(
                lambda: exported(registry, "rescind_dead_letter_events_total", **series) == 1,
                WAIT,
                "the revocation to be dead-lettered",
            )
            assert exported(registry, "rescind_dead_letter_total", service="registry", topic=topic) == 1

            # What the alert is for: the registry still licenses the withdrawn consent.
            granted = registry.post("/v1/licenses", json=body, headers=operator)
            assert granted.status_code == 201, granted.text
            license_id = granted.json()["id"]
            with sessions() as session:
                row = session.get(ProjectedConsent, consent)
                assert row is not None and row.status == "active"

            # The page: a critical rule on this series that fires at the first one.
            rule = withdrawal_alert()
            assert rule["labels"]["severity"] == "critical" and rule["for"] == "0m"
            (matcher,) = re.findall(r'event_type=~"([^"]+)"', rule["expr"])
            assert re.fullmatch(matcher, "consent_revoked") and not re.fullmatch(matcher, "consent_granted")
            assert "rescind dead-letters kafka replay" in rule["annotations"]["description"]
            # The log line names the event, not what it carries.
            (line,) = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
            assert revoke.event_id in line and "consent_revoked" in line
            assert not any(s in line for s in [*samples, subject, "read-only"])

            # The operator finds it...
            listed = cli("dead-letters", "kafka", "list")
            (found,) = [t for t in listed["topics"] if t["topic"] == dlq]
            (record,) = found["records"]
            assert record["event_id"] == revoke.event_id and record["event_type"] == "consent_revoked"
            assert (record["original_topic"], record["original_partition"], record["original_offset"]) == (
                topic,
                0,
                0,
            )
            assert record["consumer"] == "registry" and "read-only during maintenance" in record["error"]
            assert record["replayed"] is False and found["pending"] == 1 and record["time"]

            # ... fixes the database and replays it.
            with sessions() as session, session.begin():
                session.execute(text("DROP TRIGGER refuse_revocation ON projected_consents"))
            replayed = cli("dead-letters", "kafka", "replay", "--topic", dlq, "--all")
            assert replayed["replayed"] == 1
            ((done,),) = [t["replayed"] for t in replayed["topics"]]
            assert done["event_id"] == revoke.event_id and done["to"].startswith(f"{topic}[0]@")

            def revoked() -> bool:
                with sessions() as session:
                    row = session.get(ProjectedConsent, consent)
                    return row is not None and row.status == "revoked"

            wait_until(revoked, WAIT, "the replayed revocation to be applied")
            refused = assert_problem(registry.post("/v1/licenses", json=body, headers=operator), 409)
            assert refused["reason"] == "consent_revoked"
            # The license granted meanwhile is withdrawn too.
            withdrawn = registry.get(f"/v1/licenses/{license_id}", headers=operator).json()
            assert withdrawn["status"] == "revoked"

            # A second replay replays nothing, and says why.
            again = cli("dead-letters", "kafka", "replay", "--topic", dlq, "--all")
            assert again["replayed"] == 0
            (summary,) = again["topics"]
            assert summary["already_replayed"] == 1 and "replayed before" in summary["message"]
            (after,) = cli("dead-letters", "kafka", "list", "--topic", dlq)["topics"]
            assert after["pending"] == 0 and after["records"][0]["replayed"] is True
            # Applied once, and not dead-lettered again.
            assert exported(registry, "rescind_dead_letter_events_total", **series) == 1
            with sessions() as session:
                applied = session.scalars(
                    select(ProcessedEvent.event_id).where(ProcessedEvent.event_id == revoke.event_id)
                ).all()
                assert applied == [revoke.event_id]
    finally:
        if consumer.thread.is_alive():
            consumer.stop()
        engine.dispose()


class Flaky(BatchHandler[pb.ConsentEvent]):
    """Refuses every event while `broken`; then applies each event id once (as the services'
    handlers do), recording the order."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self.broken = True
        self.applied: list[str] = []

    def decode(self, value: bytes | None) -> pb.ConsentEvent:
        return pb.ConsentEvent.FromString(value or b"")

    def apply(self, session: Session, event: pb.ConsentEvent) -> bool:
        if self.broken:
            raise RuntimeError("handler bug")
        if event.event_id in self.applied:
            return False
        self.applied.append(event.event_id)
        return True


@pytest.fixture
def flaky(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[tuple[EventConsumer, Flaky, str]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'flaky.db'}")
    handler = Flaky(make_session_factory(engine))
    topic = f"test.dlq.{uuid.uuid4().hex[:12]}"
    create_topic(broker.bootstrap, topic)
    consumer = EventConsumer(
        service="flaky",
        bootstrap=broker.bootstrap,
        group_id=f"flaky-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        handler=handler,
        max_retries=0,
        retry_backoff=0.01,
    )
    yield consumer, handler, topic
    consumer._close()
    engine.dispose()


def drain(consumer: EventConsumer, count: int) -> None:
    done = 0

    def more() -> bool:
        nonlocal done
        done += consumer.poll_once(timeout_ms=200)
        return done >= count

    wait_until(more, WAIT, f"{count} records consumed")


def test_replaying_chosen_offsets_then_the_rest(flaky: tuple[EventConsumer, Flaky, str], cli: Cli) -> None:
    consumer, handler, topic = flaky
    dlq = dl.dead_letter_topic(topic, "flaky")
    events = [Projection.samples_event(f"sub_{i}", [f"smp_{i}"]) for i in range(3)]
    publish_as_relay(consumer.bootstrap, topic, events)
    drain(consumer, 3)
    (listed,) = cli("dead-letters", "kafka", "list", "--topic", dlq)["topics"]
    assert [r["event_id"] for r in listed["records"]] == [e.event_id for e in events]
    assert {r["event_type"] for r in listed["records"]} == {"sample_registered"}

    handler.broken = False
    # The middle one first: it cannot be remembered past offset 0, still pending.
    first = cli("dead-letters", "kafka", "replay", "--topic", dlq, "--offset", "1")
    assert [r["offset"] for r in first["topics"][0]["replayed"]] == [1]
    assert "not remembered" in first["topics"][0]["message"]
    drain(consumer, 1)
    assert handler.applied == [events[1].event_id]

    rest = cli("dead-letters", "kafka", "replay", "--topic", dlq, "--all")
    assert [r["offset"] for r in rest["topics"][0]["replayed"]] == [0, 1, 2]
    drain(consumer, 3)
    # Offset 1 came twice; the handler's idempotency absorbed it.
    assert sorted(handler.applied) == sorted(e.event_id for e in events)
    assert cli("dead-letters", "kafka", "replay", "--topic", dlq, "--all")["replayed"] == 0

    # Replayed records carry where they came from, and none of the dead letter's own headers.
    records = read_topic(consumer.bootstrap, topic, lambda rs: len(rs) >= 4)
    (replayed,) = [r for r in records if r.offset == 3]
    names = [k for k, _ in replayed.headers]
    assert dl.header(replayed.headers, dl.REPLAYED_FROM) == f"{dlq}:0:1"
    assert not [n for n in names if n.startswith("dlq-") and n != dl.REPLAYED_FROM]
    assert dl.header(replayed.headers, dl.EVENT_ID) == events[1].event_id


def test_unreachable_broker_and_unknown_topic_are_clear_errors(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESCIND_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    assert rescind(["dead-letters", "kafka", "list"]) == 1
    assert "cannot reach Kafka at 127.0.0.1:" in capsys.readouterr().err

    monkeypatch.setenv("RESCIND_KAFKA_BOOTSTRAP", broker.bootstrap)
    assert rescind(["dead-letters", "kafka", "replay", "--topic", "no.such.dlq", "--all"]) == 2
    assert "no dead-letter topic no.such.dlq" in capsys.readouterr().err


def test_the_cli_loads_the_kafka_client_only_for_kafka_commands() -> None:
    probe = "import sys, rescind_cli.main; print('kafka' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"
