"""The consumers apply a poll of records in one transaction and commit its offsets once.

Real broker (Tansu), real PostgreSQL, the services' real handlers (registry projection,
revocation-worker intake, consent-api notice statuses). Each test publishes its records to its own
one-partition topic before the consumer joins, so that they arrive together in one poll.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consent_api.migrate import upgrade as upgrade_consent
from consent_api.notices.handler import NoticeEventHandler
from consent_api.notices.models import RevocationNotice
from registry.consumer import ProjectionHandler
from registry.projection.models import ProcessedEvent, ProjectedConsent, ProjectedSample
from rescind_common.consumer import (
    DEAD_LETTERED,
    PROCESSED_PRUNED,
    BatchHandler,
    EventConsumer,
    dead_letter_topic,
)
from rescind_common.db import make_engine, make_session_factory, utcnow
from rescind_common.embedded_broker import EmbeddedBroker, free_port
from rescind_common.ids import new_id, new_ids
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb
from rescind_common.proto.rescind.v1 import notice_events_pb2 as npb
from revocation_worker.intake.handler import IntakeHandler
from revocation_worker.intake.models import Revocation, RevocationPart
from revocation_worker.migrate import upgrade as upgrade_worker

from support.kafka import read_topic
from support.registry import Projection, new_registry_db
from support.wait import wait_until
from support.worker import revocation_part

WAIT = 30.0


def publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    admin = make_admin(bootstrap, "test-batches-admin")
    try:
        ensure_topics(admin, [topic], partitions=1, replication_factor=1)
    finally:
        admin.close()
    producer = make_producer(bootstrap, "test-batches")
    try:
        for value in values:
            producer.send(topic, key=b"k", value=value)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset on partition 0 of `topic`."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        offset: int | None = reader.committed(TopicPartition(topic, 0))
        return offset
    finally:
        reader.close()


class Driver:
    """An EventConsumer driven by `poll_once` from the test, recording `on_batch` calls."""

    def __init__(self, broker: EmbeddedBroker, handler: BatchHandler[Any], **options: Any) -> None:
        self.topic = f"test.batches.{uuid.uuid4().hex[:12]}"
        self.group = f"batches-{uuid.uuid4().hex[:8]}"
        self.service = f"batches-{uuid.uuid4().hex[:6]}"
        self.batches: list[int] = []
        self.consumer = EventConsumer(
            service=self.service,
            bootstrap=broker.bootstrap,
            group_id=self.group,
            topics=[self.topic],
            handler=handler,
            on_batch=self.batches.append,
            **options,
        )

    def drain(self, count: int, timeout: float = WAIT) -> int:
        """Poll until `count` records are done (applied, repeats or dead-lettered)."""
        done = 0

        def more() -> bool:
            nonlocal done
            done += self.consumer.poll_once(timeout_ms=200)
            return done >= count

        wait_until(more, timeout, f"{count} records consumed")
        return done

    def committed(self) -> int | None:
        return committed(self.consumer.bootstrap, self.group, self.topic)

    def dead_lettered(self) -> float:
        return float(DEAD_LETTERED.labels(self.service, self.topic)._value.get())

    def close(self) -> None:
        self.consumer._close()


@pytest.fixture(scope="module")
def registry_sessions(
    pg_database: Callable[[str], str], tmp_path_factory: Any
) -> Iterator[sessionmaker[Session]]:
    url = new_registry_db("postgresql", pg_database, tmp_path_factory.mktemp("batches-registry"))
    engine = make_engine(url, pool_size=2)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def driver(broker: EmbeddedBroker) -> Iterator[Callable[..., Driver]]:
    made: list[Driver] = []

    def make(handler: BatchHandler[Any], **options: Any) -> Driver:
        made.append(Driver(broker, handler, **options))
        return made[-1]

    yield make
    for d in made:
        d.close()


def count(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_poison_record_in_the_middle_of_a_batch(
    driver: Callable[..., Driver], registry_sessions: sessionmaker[Session], broker: EmbeddedBroker
) -> None:
    subject = new_id("sub")
    samples = new_ids("smp", 4)
    good = [Projection.samples_event(subject, [s]) for s in samples]
    garbage = b"\xff\xff not a ConsentEvent " + uuid.uuid4().bytes
    values = [e.SerializeToString() for e in good[:2]] + [garbage] + [e.SerializeToString() for e in good[2:]]
    d = driver(ProjectionHandler(registry_sessions))
    publish(broker.bootstrap, d.topic, values)

    assert d.drain(len(values)) == len(values)

    assert count(registry_sessions, ProjectedSample, ProjectedSample.sample_id.in_(samples)) == 4
    dlq = read_topic(broker.bootstrap, dead_letter_topic(d.topic, d.service), lambda rs: len(rs) >= 1)
    assert [r.value for r in dlq] == [garbage]
    assert dict(dlq[0].headers)["dlq-original-offset"] == b"2"
    assert d.committed() == len(values)
    assert sum(d.batches) == 4


def test_the_same_event_twice_in_a_batch_is_applied_once(
    driver: Callable[..., Driver], registry_sessions: sessionmaker[Session], broker: EmbeddedBroker
) -> None:
    subject = new_id("sub")
    samples = new_ids("smp", 2)
    grant = Projection.grant_event(subject, samples)
    consent = grant.consent_granted.consent_id
    revoke = Projection.revoke_event(subject, consent, samples, ["model_training"], ended=True)
    # The grant again after its revocation (a replay): applied twice, it would look granted anew.
    events = [Projection.samples_event(subject, samples), grant, revoke, grant, revoke]
    d = driver(ProjectionHandler(registry_sessions))
    publish(broker.bootstrap, d.topic, [e.SerializeToString() for e in events])

    d.drain(len(events))

    assert sum(d.batches) == 3
    ids = {e.event_id for e in events}
    assert count(registry_sessions, ProcessedEvent, ProcessedEvent.event_id.in_(ids)) == 3
    with registry_sessions() as session:
        row = session.get(ProjectedConsent, consent)
        assert row is not None and row.status == "revoked"
    assert d.committed() == len(events)


def test_one_failing_record_does_not_hold_back_the_others_of_its_batch(
    driver: Callable[..., Driver], registry_sessions: sessionmaker[Session], broker: EmbeddedBroker
) -> None:
    subject = new_id("sub")
    samples = new_ids("smp", 3)
    events = [Projection.samples_event(subject, [s]) for s in samples]
    # PostgreSQL refuses NUL in text: this record decodes but its transaction always fails.
    events[1].sample_registered.samples[0].sha256 = "bad\x00hash"
    d = driver(ProjectionHandler(registry_sessions), max_retries=1, retry_backoff=0.05)
    publish(broker.bootstrap, d.topic, [e.SerializeToString() for e in events])

    d.drain(len(events))

    assert count(registry_sessions, ProjectedSample, ProjectedSample.sample_id.in_(samples)) == 2
    assert d.dead_lettered() == 1
    dlq = read_topic(broker.bootstrap, dead_letter_topic(d.topic, d.service), lambda rs: len(rs) >= 1)
    assert [r.value for r in dlq] == [events[1].SerializeToString()]
    assert d.committed() == len(events)
    assert sum(d.batches) == 2


def _old_processed_ids(sessions: sessionmaker[Session], n: int, age: dt.timedelta) -> list[str]:
    """Processed-event rows recorded `age` ago (as a consumer that ran then would have left them)."""
    ids = [f"evt_old_{uuid.uuid4().hex}" for _ in range(n)]
    with sessions() as session, session.begin():
        session.add_all(
            ProcessedEvent(
                event_id=i, event_type="sample_registered", subject_id="sub_old", processed_at=utcnow() - age
            )
            for i in ids
        )
    return ids


def test_old_processed_ids_are_pruned_and_a_redelivered_recent_event_is_still_a_repeat(
    driver: Callable[..., Driver], registry_sessions: sessionmaker[Session], broker: EmbeddedBroker
) -> None:
    retention = dt.timedelta(hours=720)
    subject = new_id("sub")
    samples = new_ids("smp", 2)
    grant = Projection.grant_event(subject, samples)
    consent = grant.consent_granted.consent_id
    revoke = Projection.revoke_event(subject, consent, samples, ["model_training"], ended=True)
    d = driver(
        ProjectionHandler(registry_sessions), processed_model=ProcessedEvent, processed_retention=retention
    )
    publish(broker.bootstrap, d.topic, [e.SerializeToString() for e in (grant, revoke)])
    d.drain(2)
    assert sum(d.batches) == 2
    # From now on every poll is a pruning pass (the default waits 10 minutes between two).
    d.consumer.prune_interval = 0

    old = _old_processed_ids(registry_sessions, 3, retention + dt.timedelta(hours=1))
    # Just inside the retention: kept.
    recent = _old_processed_ids(registry_sessions, 1, retention - dt.timedelta(hours=1))
    # The grant again after its revocation (a replay of a recent event): applied again, it would make
    # the revoked consent look granted anew.
    later = Projection.samples_event(subject, new_ids("smp", 1))
    publish(broker.bootstrap, d.topic, [e.SerializeToString() for e in (grant, later)])
    d.drain(2)

    assert count(registry_sessions, ProcessedEvent, ProcessedEvent.event_id.in_(old)) == 0
    kept = {grant.event_id, revoke.event_id, later.event_id, *recent}
    assert count(registry_sessions, ProcessedEvent, ProcessedEvent.event_id.in_(kept)) == len(kept)
    with registry_sessions() as session:
        row = session.get(ProjectedConsent, consent)
        assert row is not None and row.status == "revoked"
    assert sum(d.batches) == 3  # the later event only
    assert PROCESSED_PRUNED.labels(d.service)._value.get() == 3
    assert d.committed() == 4


def test_pruning_is_bounded_per_pass_and_waits_for_its_interval(
    driver: Callable[..., Driver], registry_sessions: sessionmaker[Session]
) -> None:
    retention = dt.timedelta(hours=720)
    old = _old_processed_ids(registry_sessions, 5, retention * 2)
    d = driver(
        ProjectionHandler(registry_sessions),
        processed_model=ProcessedEvent,
        processed_retention=retention,
        prune_chunk=2,
        prune_chunks_per_pass=2,
    )
    d.consumer._maybe_prune()  # the first pass runs at once: two chunks of two
    assert count(registry_sessions, ProcessedEvent, ProcessedEvent.event_id.in_(old)) == 1
    d.consumer._maybe_prune()  # within the 10-minute interval: nothing
    assert count(registry_sessions, ProcessedEvent, ProcessedEvent.event_id.in_(old)) == 1
    assert d.consumer.prune_processed() == 1
    assert PROCESSED_PRUNED.labels(d.service)._value.get() == 5


def test_a_pruning_failure_does_not_stop_the_consumer(
    driver: Callable[..., Driver], registry_sessions: sessionmaker[Session], broker: EmbeddedBroker
) -> None:
    class Broken:
        __table__ = None  # not a table: the pruning statement cannot be built

    subject = new_id("sub")
    samples = new_ids("smp", 1)
    d = driver(
        ProjectionHandler(registry_sessions),
        processed_model=Broken,
        processed_retention=dt.timedelta(hours=1),
    )
    publish(broker.bootstrap, d.topic, [Projection.samples_event(subject, samples).SerializeToString()])
    d.drain(1)
    assert count(registry_sessions, ProjectedSample, ProjectedSample.sample_id.in_(samples)) == 1


def test_every_service_consumer_prunes_its_own_processed_events(tmp_path: Path) -> None:
    from consent_api.consumer import build_consumer as build_consent
    from consent_api.notices.models import ProcessedEvent as ConsentProcessed
    from registry.config import RegistrySettings
    from registry.consumer import build_consumer as build_registry
    from revocation_worker.config import WorkerSettings
    from revocation_worker.db import ProcessedEvent as WorkerProcessed
    from revocation_worker.runner import build_consumer as build_worker
    from revocation_worker.runner import build_context

    from support.helpers import make_settings

    worker = build_context(
        WorkerSettings(worker_database_url=f"sqlite:///{tmp_path / 'w.db'}", state_dir=tmp_path)
    )
    built = [
        (build_consent(make_settings(f"sqlite:///{tmp_path / 'c.db'}", tmp_path)), ConsentProcessed),
        (
            build_registry(
                RegistrySettings(registry_database_url=f"sqlite:///{tmp_path / 'r.db'}", state_dir=tmp_path)
            ),
            ProcessedEvent,
        ),
        (build_worker(worker), WorkerProcessed),
    ]
    try:
        for consumer, model in built:
            assert consumer.processed_model is model
            assert consumer.processed_retention == dt.timedelta(hours=720)
    finally:
        worker.engine.dispose()


class CountingHandler(ProjectionHandler):
    """The registry's handler, counting the batches it was given."""

    tries = 0

    def apply_batch(self, session: Session, events: Sequence[pb.ConsentEvent]) -> list[bool]:
        self.tries += 1
        return super().apply_batch(session, events)


class Proxy:
    """A TCP forwarder to PostgreSQL that can be down: 'the database is unreachable'."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def test_offsets_wait_for_an_unreachable_database_and_nothing_is_dead_lettered(
    driver: Callable[..., Driver], pg_database: Callable[[str], str], tmp_path: Path, broker: EmbeddedBroker
) -> None:
    url = new_registry_db("postgresql", pg_database, tmp_path)
    proxy = Proxy(("127.0.0.1", 5432))
    host = url.split("@", 1)[1].split("/", 1)[0]
    engine = make_engine(url.replace(host, f"127.0.0.1:{proxy.port}"), pool_size=2)
    sessions = make_session_factory(engine)
    subject = new_id("sub")
    samples = new_ids("smp", 3)
    events = [Projection.samples_event(subject, [s]) for s in samples]
    handler = CountingHandler(sessions)
    d = driver(handler, max_retries=1, retry_backoff=0.05)
    publish(broker.bootstrap, d.topic, [e.SerializeToString() for e in events])
    try:
        # The proxy is not listening: every transaction fails to connect. Poll until the batch has
        # been tried (and brought back by the seek) more than once.
        wait_until(lambda: d.consumer.poll_once(timeout_ms=200) == 0 and handler.tries >= 3, WAIT, "retries")
        assert d.committed() is None
        assert d.dead_lettered() == 0 and d.batches == []

        proxy.start()
        d.drain(len(events))
        assert d.committed() == len(events)
        assert d.dead_lettered() == 0 and sum(d.batches) == 3
        checker = make_session_factory(make_engine(url, pool_size=1))
        assert count(checker, ProjectedSample, ProjectedSample.sample_id.in_(samples)) == 3
    finally:
        d.close()
        engine.dispose()
        proxy.stop()


@pytest.fixture(scope="module")
def worker_sessions(pg_database: Callable[[str], str]) -> Iterator[sessionmaker[Session]]:
    url = pg_database("batches-worker")
    upgrade_worker(url)
    engine = make_engine(url, pool_size=2)
    yield make_session_factory(engine)
    engine.dispose()


def test_every_part_of_a_revocation_in_one_batch_makes_it_ready(
    driver: Callable[..., Driver], worker_sessions: sessionmaker[Session], broker: EmbeddedBroker
) -> None:
    subject, revocation = new_id("sub"), new_id("rev")
    first, second = new_id("cns"), new_id("cns")
    parts = [
        revocation_part(subject, revocation, first, 0, 2, 2),
        revocation_part(subject, revocation, second, 0, 1, 2),
        revocation_part(subject, revocation, first, 1, 2, 2),
    ]
    events = [parts[0], parts[1], parts[1], parts[2]]  # the second part redelivered in the same poll
    d = driver(IntakeHandler(worker_sessions))
    publish(broker.bootstrap, d.topic, [e.SerializeToString() for e in events])

    d.drain(len(events))

    with worker_sessions() as session:
        row = session.get(Revocation, revocation)
        assert row is not None and row.state == "ready" and row.next_resolve_at is not None
    assert count(worker_sessions, RevocationPart, RevocationPart.revocation_id == revocation) == 3
    assert sum(d.batches) == 3
    assert d.committed() == len(events)


def test_a_notice_created_then_delivered_in_one_batch_ends_delivered(
    driver: Callable[..., Driver], pg_database: Callable[[str], str], broker: EmbeddedBroker
) -> None:
    url = pg_database("batches-consent")
    upgrade_consent(url)
    engine = make_engine(url, pool_size=2)
    sessions = make_session_factory(engine)
    revocation, licensee, notice = new_id("rev"), new_id("lic"), new_id("ntc")

    def event(**payload: Any) -> npb.NoticeEvent:
        e = npb.NoticeEvent(
            event_id=new_id("evt"), revocation_id=revocation, licensee_id=licensee, notice_id=notice
        )
        ((field, message),) = payload.items()
        getattr(e, field).CopyFrom(message)
        return e

    created = event(notice_created=npb.NoticeCreated())
    delivered = event(notice_delivered=npb.NoticeDelivered())
    events = [created, delivered, created]
    d = driver(NoticeEventHandler(sessions))
    publish(broker.bootstrap, d.topic, [e.SerializeToString() for e in events])
    try:
        d.drain(len(events))
        with sessions() as session:
            row = session.get(RevocationNotice, (revocation, licensee))
            assert row is not None and row.status == "delivered"
        assert sum(d.batches) == 2 and d.committed() == len(events)
    finally:
        engine.dispose()


@pytest.mark.parametrize("replayed", [8, 20], ids=["shorter-than-the-old-position", "past-the-old-position"])
def test_a_consumer_running_through_a_lost_log_reads_the_new_log_from_its_start(
    registry_sessions: sessionmaker[Session], tmp_path: Path, replayed: int
) -> None:
    """The broker loses its log while a consumer runs (it had read 12 records), and the relay
    re-publishes what it retained: fewer records than that (older ones pruned) or more. A consumer
    that kept its old position would start the new log part-way and never apply the first records
    there; it rejoins the group on the new broker, finds no committed offset and reads the new log
    from the beginning (`auto_offset_reset="earliest"`)."""
    port = free_port()
    subject = new_id("sub")
    old = new_ids("smp", 12)
    new = new_ids("smp", replayed)
    broker = EmbeddedBroker(port, log_file=tmp_path / "b1.log").start()
    d = Driver(broker, ProjectionHandler(registry_sessions), max_retries=1)
    try:
        publish(
            broker.bootstrap,
            d.topic,
            [Projection.samples_event(subject, [s]).SerializeToString() for s in old],
        )
        d.drain(len(old))
        assert count(registry_sessions, ProjectedSample, ProjectedSample.sample_id.in_(old)) == len(old)

        broker.stop(kill=True)
        broker = EmbeddedBroker(port, log_file=tmp_path / "b2.log").start()
        # The new log: events the consumer never saw, from offset 0.
        publish(
            broker.bootstrap,
            d.topic,
            [Projection.samples_event(subject, [s]).SerializeToString() for s in new],
        )

        def all_applied() -> bool:
            with contextlib.suppress(Exception):  # the client reconnecting to the new broker
                d.consumer.poll_once(timeout_ms=200)
            return count(registry_sessions, ProjectedSample, ProjectedSample.sample_id.in_(new)) == len(new)

        wait_until(all_applied, 120, "every event of the new log applied")
    finally:
        d.close()
        broker.stop(kill=True)


def test_a_consumer_with_slow_work_between_short_polls_still_joins_its_group(
    driver: Callable[..., Driver], registry_sessions: sessionmaker[Session], broker: EmbeddedBroker
) -> None:
    """Joining a group takes the broker seconds. kafka-python forgets a join that completes while no
    poll waits on it and joins again, so a consumer that polls briefly and then works for a while
    (a slow database, a large batch) would rejoin forever and apply nothing. While it (re)joins, one
    poll waits for the join to complete."""
    subject = new_id("sub")
    samples = new_ids("smp", 3)
    d = driver(ProjectionHandler(registry_sessions))
    publish(
        broker.bootstrap,
        d.topic,
        [Projection.samples_event(subject, [s]).SerializeToString() for s in samples],
    )
    done = 0

    def applied() -> bool:
        nonlocal done
        done += d.consumer.poll_once(timeout_ms=50)
        threading.Event().wait(1.0)  # the work between two polls
        return done >= len(samples)

    wait_until(applied, 60, "the records applied by a consumer that works between short polls")
    assert count(registry_sessions, ProjectedSample, ProjectedSample.sample_id.in_(samples)) == len(samples)
