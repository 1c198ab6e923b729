"""The transactional outbox and its relay to Kafka.

A state change and its event commit in the same database transaction: the writer builds its
events' rows (`outbox_row`) and adds them with its other writes (`insert_outbox`, or
`outbox_write` folded with them by `rescind_common.bulk.execute`). The relay publishes committed
rows in order and marks them published; it keeps published rows for a retention window and
re-publishes them when it finds that the broker has lost its log. Consumers deduplicate by event
id, so repeats are harmless.

What the relay knows of each topic's log is kept in the service's own database (`outbox_log`,
`OutboxLogMixin`), so that it survives the relay's restarts: the topic id the broker gave the log
and, per partition, an offset the log is known to have reached. At start and at every topic check
the relay compares that with what the broker says (`lost_logs`): a missing topic, another topic id
or an end offset below the one recorded means the log was lost, and every retained row of that
topic is published again. A relay that kept this in memory only would miss the loss whenever it
restarted together with the broker: the embedded broker recreates a topic as soon as a consumer
subscribes, so the relay would find it present and replay nothing.

On PostgreSQL the relay sleeps until a row is committed: a statement trigger on each service's
outbox table (its Alembic migration) sends `NOTIFY rescind_outbox` in the writing transaction, which
PostgreSQL delivers on commit only (and once per transaction), and the relay LISTENs on a dedicated
connection (`rescind_common.pglisten`). A fallback poll (`fallback_interval`) covers a missed
notification; while the LISTEN connection is down the relay polls every `poll_interval` as it does
on SQLite, where there is no NOTIFY.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import UnknownTopicOrPartitionError
from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    LargeBinary,
    String,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column

from rescind_common.bulk import Write, execute, insert_rows
from rescind_common.db import JSONType, UTCDateTime, utcnow
from rescind_common.health import Heartbeat
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PUBLISH_ERRORS,
    OUTBOX_PUBLISHED,
    OUTBOX_REPLAYED,
)
from rescind_common.pglisten import Listener, libpq_url
from rescind_common.settings import RescindSettings

log = logging.getLogger(__name__)

# The channel the outbox trigger notifies (the services' migrations spell it out: keep them in step).
# Channels are per database, and each service has a database of its own.
OUTBOX_CHANNEL = "rescind_outbox"


class _StopEvent(threading.Event):
    """The relay's `stop_event`: setting it also ends the relay's sleep at once."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()


class OutboxRow(Protocol):
    id: int
    event_id: str
    topic: str
    key: str
    event_type: str
    payload: bytes
    created_at: dt.datetime
    published_at: dt.datetime | None


class OutboxMixin:
    """Mix into a service's declarative base to declare its `outbox` table."""

    __tablename__ = "outbox"

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        # A new Index per service: one Index object can only belong to one table.
        return (Index("ix_outbox_unpublished", "published_at", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OutboxLogMixin:
    """Mix into a service's declarative base to declare its `outbox_log` table: what the relay
    knows of the broker's log of each topic it publishes to (see the module's docstring)."""

    __tablename__ = "outbox_log"

    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The id the broker gave the topic (NULL: not known yet, or the topic is being recreated).
    topic_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Partition (as a string: JSON keys) -> the lowest offset of the last records published there:
    # the log reached at least that far. The lowest, not the highest, because the embedded broker
    # reports a partition's end as the start of its last batch.
    floors: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


@dataclass(frozen=True)
class KnownLog:
    """What the relay recorded of one topic's log."""

    topic_id: str | None = None
    floors: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SeenLog:
    """What the broker says of one topic now: None for a missing topic; an empty id when the
    broker has no topic ids; the end offset of each partition it was asked about."""

    topic_id: str | None
    ends: dict[int, int] = field(default_factory=dict)


def lost_logs(known: Mapping[str, KnownLog], seen: Mapping[str, SeenLog]) -> dict[str, str]:
    """The topics whose log the broker lost, each with why. A topic never recorded (a new relay, a
    new topic) is adopted as it is; a missing topic counts as lost whatever was recorded, since
    rows may have been published to it before the record was written."""
    lost: dict[str, str] = {}
    for topic, now in seen.items():
        before = known.get(topic)
        if now.topic_id is None:
            lost[topic] = "the topic is missing"
        elif before is None:
            continue
        elif before.topic_id and now.topic_id and before.topic_id != now.topic_id:
            lost[topic] = f"the topic id changed from {before.topic_id} to {now.topic_id}"
        else:
            short = {p: now.ends.get(p) for p, floor in before.floors.items() if now.ends.get(p, -1) < floor}
            if short:
                p, end = min(short.items())
                lost[topic] = (
                    f"partition {p} ends at {end if end is not None else 'nothing'}, "
                    f"below offset {before.floors[p]} already published"
                )
    return lost


# Ids per event (a revocation's or a license's sample ids): a record stays well under Kafka's
# default 1 MB whatever the number of samples; the consumers join the numbered chunks.
EVENT_IDS_CHUNK = 5000
# Sample references (id, hash, kind) per event: each is larger than an id.
EVENT_REFS_CHUNK = 1000


def outbox_row(
    *,
    topic: str,
    key: str,
    event_id: str,
    event_type: str,
    message: Message,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """One outbox row as plain data (every column but the id and `published_at`), for
    `insert_outbox`: build a whole batch's rows first, then write them in one call."""
    return {
        "event_id": event_id,
        "topic": topic,
        "key": key,
        "event_type": event_type,
        "payload": message.SerializeToString(),
        "created_at": created_at or utcnow(),
    }


def outbox_write(model: Any, rows: Sequence[dict[str, Any]]) -> Write:
    """`outbox_row`s as one write for `rescind_common.bulk.execute`, alone or folded with the
    caller's other writes: rows land in order (the relay publishes in id order)."""
    return insert_rows(model, rows)


def insert_outbox(session_or_conn: Session | Connection, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Add `outbox_row`s to the outbox in the caller's transaction, in order, in one statement on
    PostgreSQL. No rows, no statement. A caller with pending ORM changes that must come first
    flushes its session before."""
    execute(session_or_conn, [outbox_write(model, rows)])


class OutboxRelay:
    """Publishes outbox rows to Kafka. Safe to run in several replicas: on PostgreSQL
    one relay at a time holds an advisory lock for the publishing step, so order per key holds."""

    def __init__(
        self,
        engine: Engine,
        model: Any,
        *,
        log_model: Any,
        service: str,
        bootstrap: str,
        topics: list[str],
        partitions: int = 6,
        replication_factor: int = 1,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        fallback_interval: float = 2.0,
        listen: bool = True,
        retention: dt.timedelta = dt.timedelta(hours=72),
        topic_check_interval: float = 2.0,
        backlog_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.model = model
        self.log_model = log_model
        self.service = service
        self.bootstrap = bootstrap
        self.topics = topics
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.batch_size = batch_size
        # Without notifications (SQLite, LISTEN connection down): poll this often.
        self.poll_interval = poll_interval
        # With them (PostgreSQL): look anyway this often, for a notification that went missing.
        self.fallback_interval = fallback_interval
        self.listen = listen and engine.dialect.name == "postgresql"
        self._listener: Listener | None = None
        self.retention = retention
        self.topic_check_interval = topic_check_interval
        self.backlog_interval = backlog_interval
        self._last_backlog = 0.0
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._last_topic_check = 0.0
        # topic -> partition -> the lowest offset of the last records published there (not yet in
        # `outbox_log`: written at the next topic check, off the publishing path).
        self._floors: dict[str, dict[int, int]] = {}
        self._last_prune = 0.0
        self._statements: dict[bool, Any] = {}  # _unpublished's, without and with the row lock
        self._mark: Any = None  # _mark_published's
        self._lock_key = zlib.crc32(f"rescind-outbox-{service}".encode())
        # Set by a notification (from the listener's thread), by a stop, or by `wake()`.
        self._wake = threading.Event()
        self.stop_event: threading.Event = _StopEvent(self._wake)
        # Ticked on every turn of `run` (idle waits end within `topic_check_interval`): /healthz.
        self.heartbeat = Heartbeat("relay")
        # Every series from the start: increase()/rate() miss the first event of a series born at 1.
        OUTBOX_PUBLISH_ERRORS.labels(service)
        OUTBOX_REPLAYED.labels(service)
        for topic in topics:
            OUTBOX_PUBLISHED.labels(service, topic)

    @classmethod
    def from_settings(
        cls,
        settings: RescindSettings,
        engine: Engine,
        model: Any,
        *,
        log_model: Any,
        service: str,
        topics: list[str],
    ) -> OutboxRelay:
        """A service's relay as its settings say (`RESCIND_KAFKA_*`, `RESCIND_OUTBOX_*`)."""
        return cls(
            engine,
            model,
            log_model=log_model,
            service=service,
            bootstrap=settings.kafka_bootstrap,
            topics=topics,
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            fallback_interval=settings.outbox_fallback_poll_seconds,
            retention=dt.timedelta(hours=settings.outbox_retention_hours),
        )

    # -- connection management -------------------------------------------------

    def _connect(self) -> None:
        if self._admin is None:
            self._admin = make_admin(self.bootstrap, f"{self.service}-relay-admin")
            self._check_topics()
        if self._producer is None:
            self._producer = make_producer(self.bootstrap, f"{self.service}-relay")

    def _reset(self) -> None:
        # kafka-python's idempotent producer stays broken after a broker restart: recreate it.
        for client in (self._producer, self._admin):
            if client is not None:
                try:
                    client.close(timeout=1) if isinstance(client, KafkaProducer) else client.close()
                except Exception:
                    log.debug("closing kafka client failed", exc_info=True)
        self._producer = None
        self._admin = None

    def _describe(self) -> dict[str, str | None]:
        """Topic -> its id ('' when the broker has none), None for a missing topic."""
        assert self._admin is not None
        out: dict[str, str | None] = {}
        for d in self._admin.describe_topics(list(dict.fromkeys(self.topics))):
            ok = d.get("error_code") == 0
            out[str(d.get("name"))] = str(d.get("topic_id") or "") if ok else None
        return out

    def _ends(self, ids: dict[str, str | None], known: Mapping[str, KnownLog]) -> dict[str, dict[int, int]]:
        """The end offset of every partition with a recorded floor, for the topics present."""
        assert self._admin is not None
        wanted = {
            TopicPartition(topic, p): OffsetSpec.LATEST
            for topic, log_ in known.items()
            if ids.get(topic) is not None
            for p in log_.floors
        }
        ends: dict[str, dict[int, int]] = {}
        if not wanted:
            return ends
        try:
            answer = self._admin.list_partition_offsets(wanted)
        except UnknownTopicOrPartitionError:
            # A partition recorded is gone (a topic recreated with fewer): it ends at nothing.
            answer = {}
            for tp, spec in wanted.items():
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    answer.update(self._admin.list_partition_offsets({tp: spec}))
        for tp, offset in answer.items():
            ends.setdefault(tp.topic, {})[tp.partition] = int(offset.offset)
        return ends

    def _known(self, conn: Connection, *, lock: bool) -> dict[str, KnownLog]:
        table = self.log_model.__table__
        stmt = select(table.c.topic, table.c.topic_id, table.c.floors).where(
            table.c.topic.in_(list(dict.fromkeys(self.topics)))
        )
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return {
            row.topic: KnownLog(row.topic_id, {int(p): int(o) for p, o in (row.floors or {}).items()})
            for row in conn.execute(stmt)
        }

    def _record(self, conn: Connection, topic: str, topic_id: str | None, floors: dict[int, int]) -> None:
        table = self.log_model.__table__
        values = {
            "topic_id": topic_id,
            "floors": {str(p): o for p, o in floors.items()},
            "updated_at": utcnow(),
        }
        if not conn.execute(update(table).where(table.c.topic == topic).values(**values)).rowcount:
            conn.execute(insert(table).values(topic=topic, **values))

    def _check_topics(self) -> None:
        """Compare the broker's topics with what `outbox_log` recorded of them; re-publish the
        retained rows of every topic whose log was lost; record what the broker says now."""
        assert self._admin is not None
        ids = self._describe()
        missing = [t for t in dict.fromkeys(self.topics) if ids.get(t) is None]
        if missing:
            # Mark the retained rows for re-publishing, and forget the old log, *before* creating the
            # topics: if anything failed after the creation (database briefly down, process killed),
            # the next check would find the topics present and their rows never published again.
            with self.engine.begin() as conn:
                self._known(conn, lock=True)
                self._replay(conn, dict.fromkeys(missing, "the topic is missing"))
                for topic in missing:
                    self._record(conn, topic, None, {})
            ensure_topics(
                self._admin, missing, partitions=self.partitions, replication_factor=self.replication_factor
            )
            ids = self._describe()
        with self.engine.connect() as conn:
            known = self._known(conn, lock=False)
        ends = self._ends(ids, known)
        with self.engine.begin() as conn:
            # Locked and read again: another replica may have replayed and recorded the new log since.
            known = self._known(conn, lock=True)
            # The topics just created are recorded here too (their new ids; nothing was lost since).
            seen = {t: SeenLog(ids.get(t), ends.get(t, {})) for t in dict.fromkeys(self.topics)}
            lost = lost_logs(known, seen)
            self._replay(conn, lost)
            for topic, now in seen.items():
                if now.topic_id is None:
                    continue  # gone again since it was described: the next check recreates it
                before = known.get(topic)
                # Offsets published since the last check; dropped with a lost log (they may be the
                # old log's).
                fresh = self._floors.pop(topic, {})
                if topic in lost:
                    floors: dict[int, int] = {}
                elif before is None:
                    floors = fresh
                else:
                    floors = {**before.floors, **fresh}
                if before is None or topic in lost or before.topic_id != (now.topic_id or None) or fresh:
                    self._record(conn, topic, now.topic_id or None, floors)
        self._last_topic_check = time.monotonic()

    def _replay(self, conn: Connection, lost: Mapping[str, str]) -> None:
        """The broker lost these topics' logs: publish every retained row for them again."""
        if not lost:
            return
        result = conn.execute(
            update(self.model)
            .where(self.model.topic.in_(sorted(lost)), self.model.published_at.is_not(None))
            .values(published_at=None)
        )
        if result.rowcount and conn.dialect.name == "postgresql":
            # The trigger fires on INSERT only: tell the replica that holds the publishing lock.
            conn.execute(text("SELECT pg_notify(:c, '')"), {"c": OUTBOX_CHANNEL})
        for topic, why in sorted(lost.items()):
            log.warning("the broker lost the log of %s (%s)", topic, why)
        if result.rowcount:
            log.warning("re-publishing %d retained events to %s", result.rowcount, sorted(lost))
            OUTBOX_REPLAYED.labels(self.service).inc(result.rowcount)

    # -- publishing ------------------------------------------------------------

    def _unpublished(self, *, lock: bool = False) -> Any:
        """The next batch of unpublished rows (plain rows, no ORM objects): a Core statement built
        once per relay, bound per call (the relay runs it on every wake-up)."""
        stmt = self._statements.get(lock)
        if stmt is None:
            table = self.model.__table__
            c = table.c
            stmt = (
                select(c.id, c.event_id, c.topic, c.key, c.event_type, c.payload)
                .where(c.published_at.is_(None), c.topic.in_(bindparam("topics", expanding=True)))
                .order_by(c.id)
                .limit(bindparam("limit"))
            )
            if lock:
                stmt = stmt.with_for_update(skip_locked=True)
            self._statements[lock] = stmt
        return stmt

    def _unpublished_rows(self, session: Session, *, lock: bool = False) -> list[Any]:
        params = {"topics": list(self.topics), "limit": self.batch_size}
        return list(session.connection().execute(self._unpublished(lock=lock), params))

    def publish_once(self) -> int:
        """Publish one batch; return how many rows were published."""
        self._connect()
        if time.monotonic() - self._last_topic_check > self.topic_check_interval:
            self._check_topics()
        if self.engine.dialect.name != "postgresql":
            return self._publish_unlocked()
        with Session(self.engine) as session, session.begin():
            got = session.execute(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": self._lock_key}
            ).scalar()
            if not got:
                return 0
            rows = self._unpublished_rows(session, lock=True)
            if not rows:
                return 0
            self._send(rows)
            self._mark_published(session, rows)
            return len(rows)

    def _publish_unlocked(self) -> int:
        """SQLite (one relay per database): read, send, then mark, without holding the write lock
        while Kafka answers (a slow broker must not stall the API's writes)."""
        with Session(self.engine) as session:
            rows = self._unpublished_rows(session)
        if not rows:
            return 0
        self._send(rows)
        with Session(self.engine) as session, session.begin():
            self._mark_published(session, rows)
        return len(rows)

    def _mark_published(self, session: Session, rows: list[Any]) -> None:
        if self._mark is None:
            table = self.model.__table__
            self._mark = (
                update(table)
                .where(table.c.id.in_(bindparam("ids", expanding=True)))
                .values(published_at=bindparam("now", type_=UTCDateTime()))
            )
        session.connection().execute(self._mark, {"ids": [r.id for r in rows], "now": utcnow()})
        for row in rows:
            OUTBOX_PUBLISHED.labels(self.service, row.topic).inc()

    def _send(self, rows: list[Any]) -> None:
        producer = self._producer
        assert producer is not None
        futures = [
            producer.send(
                row.topic,
                key=row.key.encode(),
                value=row.payload,
                headers=[
                    ("event-id", row.event_id.encode()),
                    ("event-type", row.event_type.encode()),
                    ("content-type", b"application/x-protobuf"),
                ],
            )
            for row in rows
        ]
        producer.flush(timeout=30)
        floors: dict[str, dict[int, int]] = {}
        for fut in futures:
            meta = fut.get(timeout=0)  # raises if that record failed
            low = floors.setdefault(meta.topic, {})
            if meta.offset < low.get(meta.partition, meta.offset + 1):
                low[meta.partition] = meta.offset
        for topic, low in floors.items():
            self._floors.setdefault(topic, {}).update(low)

    def prune(self) -> int:
        cutoff = utcnow() - self.retention
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(self.model).where(
                    self.model.published_at.is_not(None), self.model.published_at < cutoff
                )
            )
        return int(result.rowcount or 0)

    def backlog(self) -> int:
        with Session(self.engine) as session:
            count = session.scalar(
                select(func.count())
                .select_from(self.model)
                .where(self.model.published_at.is_(None), self.model.topic.in_(self.topics))
            )
            return int(count or 0)

    def observe_backlog(self) -> tuple[int, float]:
        """Set the backlog gauges (unpublished rows, age of the oldest) from one cheap query on the
        unpublished index; return them."""
        unpublished = self.model.published_at.is_(None), self.model.topic.in_(self.topics)
        with Session(self.engine) as session:
            count = int(session.scalar(select(func.count()).select_from(self.model).where(*unpublished)) or 0)
            oldest = (
                session.scalar(
                    select(self.model.created_at).where(*unpublished).order_by(self.model.id).limit(1)
                )
                if count
                else None
            )
        age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
        OUTBOX_BACKLOG.labels(self.service).set(count)
        OUTBOX_OLDEST_AGE.labels(self.service).set(age)
        return count, age

    def _maybe_observe_backlog(self) -> None:
        # At most once per `backlog_interval`, and on its own: a failing query (database down) must not
        # count as a publish error or reset the Kafka clients; the gauges keep their last values.
        if time.monotonic() - self._last_backlog < self.backlog_interval:
            return
        self._last_backlog = time.monotonic()
        try:
            self.observe_backlog()
        except Exception as exc:
            log.debug("outbox backlog query failed: %s: %s", type(exc).__name__, exc)

    # -- waking ----------------------------------------------------------------

    def wake(self) -> None:
        """Publish now (thread-safe): the listener calls this on every notification."""
        self._wake.set()

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.listening

    @property
    def listen_backend_pid(self) -> int | None:
        """The PostgreSQL backend of the LISTEN connection, while there is one."""
        return self._listener.backend_pid if self._listener is not None else None

    def _idle_wait(self) -> float:
        """How long to sleep when nothing is left to publish, unless woken."""
        if not self.listening:
            return self.poll_interval
        # Still check the broker's topics on time: a broker that lost its log while nothing was
        # written must get the retained rows back (`_check_topics`).
        until_check = self._last_topic_check + self.topic_check_interval - time.monotonic()
        return max(self.poll_interval, min(self.fallback_interval, until_check))

    def run(self) -> None:
        """Publish until `stop_event` is set. Broker and database outages are retried with backoff."""
        backoff = 0.2
        log.info("outbox relay for %s started (bootstrap %s)", self.service, self.bootstrap)
        if self.listen:
            self._listener = Listener(
                libpq_url(self.engine), OUTBOX_CHANNEL, self.wake, name=f"{self.service}-relay-listen"
            ).start()
        try:
            while not self.stop_event.is_set():
                self.heartbeat.tick()
                # Cleared before reading the outbox: a row committed after this point either is
                # read below or its notification ends the next sleep at once.
                self._wake.clear()
                self._maybe_observe_backlog()
                try:
                    published = self.publish_once()
                    backoff = 0.2
                    if time.monotonic() - self._last_prune > 60:
                        self._last_prune = time.monotonic()
                        self.prune()
                    if published < self.batch_size:
                        self._wake.wait(self._idle_wait())
                except Exception as exc:
                    OUTBOX_PUBLISH_ERRORS.labels(self.service).inc()
                    log.warning(
                        "outbox relay error (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff
                    )
                    self._reset()
                    self.heartbeat.tick()  # a failed turn is still a turn: retrying is not wedged
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            if self._listener is not None:
                self._listener.stop()
                self._listener.join(timeout=5)
                self._listener = None
            self._reset()
        log.info("outbox relay for %s stopped", self.service)
