"""Audit checkpoints ride every topic (AuditCheckpoint payloads keyed `audit:<service>`); every
consumer skips them and commits past them, with the relay's `event-type` header and without it.

Real broker (Tansu), real PostgreSQL, the services' real handlers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consent_api.migrate import upgrade as upgrade_consent
from consent_api.notices.handler import NoticeEventHandler
from consent_api.notices.models import RevocationNotice
from registry.consumer import ProjectionHandler
from registry.projection.models import ProjectedSample
from rescind_common import audit_chain
from rescind_common.consumer import DEAD_LETTERED, BatchHandler, EventConsumer
from rescind_common.db import make_engine, make_session_factory, utcnow
from rescind_common.embedded_broker import EmbeddedBroker
from rescind_common.ids import new_id, new_ids
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.proto.rescind.v1 import consent_events_pb2 as cpb
from rescind_common.proto.rescind.v1 import license_events_pb2 as lpb
from rescind_common.proto.rescind.v1 import notice_events_pb2 as npb
from revocation_worker.intake.handler import IntakeHandler
from revocation_worker.intake.models import RevocationPart
from revocation_worker.migrate import upgrade as upgrade_worker

from support.registry import Projection, new_registry_db
from support.wait import wait_until
from support.worker import revocation_part

Record = tuple[bytes, str | None]  # value, event-type header


def _claims(service: str) -> dict[str, Any]:
    return {
        "service": service,
        "seq": 7,
        "root": "ab" * 32,
        "previous_root": "",
        "chain_count": 3,
        "at": audit_chain.iso(utcnow()),
        "jws": "x.y.z",
    }


def consent_checkpoint() -> bytes:
    cp = audit_chain.checkpoint_message(_claims("consent-api"))
    return cpb.ConsentEvent(
        event_id=new_id("evt"), producer="consent-api", audit_checkpoint=cp
    ).SerializeToString()


def license_checkpoint() -> bytes:
    cp = audit_chain.checkpoint_message(_claims("registry"))
    return lpb.LicenseEvent(
        event_id=new_id("evt"), producer="registry", audit_checkpoint=cp
    ).SerializeToString()


def notice_checkpoint() -> bytes:
    cp = audit_chain.checkpoint_message(_claims("revocation-worker"))
    return npb.NoticeEvent(
        event_id=new_id("evt"), producer="revocation-worker", audit_checkpoint=cp
    ).SerializeToString()


def run(
    broker: EmbeddedBroker, handler: BatchHandler[Any], records: list[Record]
) -> tuple[int, float, int | None]:
    """Publish to a fresh topic, consume everything: (applied, dead-lettered, committed offset)."""
    topic = f"test.audit.{uuid.uuid4().hex[:12]}"
    service = f"audit-{uuid.uuid4().hex[:6]}"
    admin = make_admin(broker.bootstrap, "test-audit-admin")
    try:
        ensure_topics(admin, [topic], partitions=1, replication_factor=1)
    finally:
        admin.close()
    producer = make_producer(broker.bootstrap, "test-audit")
    try:
        for value, event_type in records:
            headers = [("event-type", event_type.encode())] if event_type else None
            producer.send(topic, key=b"audit:test", value=value, headers=headers)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)
    batches: list[int] = []
    consumer = EventConsumer(
        service=service,
        bootstrap=broker.bootstrap,
        group_id=f"audit-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        handler=handler(topic),
        on_batch=batches.append,
    )
    done = 0

    def more() -> bool:
        nonlocal done
        done += consumer.poll_once(timeout_ms=200)
        return done >= len(records)

    try:
        wait_until(more, 30.0, f"{len(records)} records consumed")
        from kafka import KafkaConsumer, TopicPartition

        reader = KafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=consumer.group_id, enable_auto_commit=False
        )
        try:
            committed = reader.committed(TopicPartition(topic, 0))
        finally:
            reader.close()
    finally:
        consumer._close()
    return sum(batches), float(DEAD_LETTERED.labels(service, topic)._value.get()), committed


def count(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture(scope="module")
def registry_sessions(
    pg_database: Callable[[str], str], tmp_path_factory: Any
) -> Iterator[sessionmaker[Session]]:
    url = new_registry_db("postgresql", pg_database, tmp_path_factory.mktemp("audit-registry"))
    engine = make_engine(url, pool_size=2)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def worker_sessions(pg_database: Callable[[str], str]) -> Iterator[sessionmaker[Session]]:
    url = pg_database("audit-worker")
    upgrade_worker(url)
    engine = make_engine(url, pool_size=2)
    yield make_session_factory(engine)
    engine.dispose()


def test_the_registry_projection_skips_consent_api_checkpoints(
    broker: EmbeddedBroker, registry_sessions: sessionmaker[Session]
) -> None:
    subject, samples = new_id("sub"), new_ids("smp", 2)
    records: list[Record] = [
        (Projection.samples_event(subject, [samples[0]]).SerializeToString(), "sample_registered"),
        (consent_checkpoint(), "audit_checkpoint"),
        (consent_checkpoint(), None),
        (Projection.samples_event(subject, [samples[1]]).SerializeToString(), "sample_registered"),
    ]
    applied, dead, committed = run(broker, lambda _: ProjectionHandler(registry_sessions), records)
    assert (applied, dead, committed) == (2, 0, 4)
    assert count(registry_sessions, ProjectedSample, ProjectedSample.sample_id.in_(samples)) == 2


def test_the_worker_intake_skips_consent_and_registry_checkpoints(
    broker: EmbeddedBroker, worker_sessions: sessionmaker[Session]
) -> None:
    subject, revocation, consent = new_id("sub"), new_id("rev"), new_id("cns")
    part = revocation_part(subject, revocation, consent, 0, 1, 1)
    consent_topic: list[Record] = [
        (consent_checkpoint(), "audit_checkpoint"),
        (consent_checkpoint(), None),
        (part.SerializeToString(), "consent_revoked"),
    ]
    applied, dead, committed = run(broker, lambda _: IntakeHandler(worker_sessions), consent_topic)
    assert (applied, dead, committed) == (1, 0, 3)
    assert count(worker_sessions, RevocationPart, RevocationPart.revocation_id == revocation) == 1
    license_topic: list[Record] = [(license_checkpoint(), None), (license_checkpoint(), "audit_checkpoint")]
    handler = lambda topic: IntakeHandler(worker_sessions, license_topic=topic)  # noqa: E731
    assert run(broker, handler, license_topic) == (0, 0, 2)


def test_consent_api_skips_worker_checkpoints(
    broker: EmbeddedBroker, pg_database: Callable[[str], str]
) -> None:
    url = pg_database("audit-consent")
    upgrade_consent(url)
    engine = make_engine(url, pool_size=2)
    sessions = make_session_factory(engine)
    revocation, licensee, notice = new_id("rev"), new_id("lic"), new_id("ntc")
    created = npb.NoticeEvent(
        event_id=new_id("evt"),
        revocation_id=revocation,
        licensee_id=licensee,
        notice_id=notice,
        notice_created=npb.NoticeCreated(),
    )
    records: list[Record] = [
        (notice_checkpoint(), None),
        (created.SerializeToString(), "notice_created"),
        (notice_checkpoint(), "audit_checkpoint"),
    ]
    try:
        applied, dead, committed = run(broker, lambda _: NoticeEventHandler(sessions), records)
        assert (applied, dead, committed) == (1, 0, 3)
        with sessions() as session:
            assert session.get(RevocationNotice, (revocation, licensee)) is not None
    finally:
        engine.dispose()
