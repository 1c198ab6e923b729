"""A thin Kafka consumer loop: decode a poll's records, apply them in one transaction, commit.

- auto-commit is off; offsets (every partition of the poll, one commit) are committed only after
  the records' database transaction committed. Redelivery after a crash is expected: handlers are
  idempotent (they record processed event ids in the same transaction).
- a record that cannot be decoded (`PoisonMessage`) goes to the dead-letter topic at once, the
  others of its poll are still applied together.
- a dead-lettered record is never applied until an operator replays it (`rescind dead-letters
  kafka replay`): each one is logged at ERROR with its event id and type and counted by type in
  `rescind_dead_letter_events_total`, so that a lost revocation pages someone.
- when the batch transaction fails and the database answers, the poll is applied again one record
  at a time: a failing record is retried a bounded number of times with backoff, then
  dead-lettered, and the others go on. When the database does not answer, nothing is
  dead-lettered or committed: the consumer seeks back and tries the same records again later.
- SIGTERM/SIGINT (via `stop_event`) stops the loop; records not yet applied stay uncommitted and
  are redelivered.
- any client error (a broker restart, for one) closes the consumer and builds a new one.
- a topic whose id changes under a running consumer (the broker lost its log, and the topic came
  back empty) is read again from the beginning: the relays re-publish what they retained there,
  and a consumer that kept its old position would skip the first records of the new log (or, when
  the new log is shorter, wait past its end for records that never come).
- given a `processed_model`, the loop deletes its rows older than `processed_retention` every
  `prune_interval` seconds, in bounded chunks, so the processed-ids table does not grow forever.
  The retention must outlast any replay (outbox retention, topic retention): an event replayed after
  its id was pruned would be applied again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Gauge
from sqlalchemy import delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from rescind_common import dead_letters
from rescind_common.db import utcnow
from rescind_common.dead_letters import dead_letter_topic
from rescind_common.health import Heartbeat
from rescind_common.kafka import (
    BOOTSTRAP_TIMEOUT_MS,
    ensure_topics,
    make_admin,
    make_producer,
    security_config,
)

log = logging.getLogger(__name__)

CONSUMED = Counter(
    "rescind_consumer_records_total", "Records handled by a consumer", ["service", "topic", "outcome"]
)
CONSUMER_LAG = Gauge(
    "rescind_consumer_lag", "Records behind the partition high watermark", ["service", "topic", "partition"]
)
DEAD_LETTERED = Counter(
    "rescind_dead_letter_total", "Records sent to a dead-letter topic", ["service", "topic"]
)
# The same records by event type (the `event-type` header): a dead-lettered `consent_revoked` means
# a withdrawal this service never applied, which pages; most other types can wait.
DEAD_LETTERED_EVENTS = Counter(
    "rescind_dead_letter_events_total",
    "Records sent to a dead-letter topic, by event type",
    ["service", "topic", "event_type"],
)
PROCESSED_PRUNED = Counter(
    "rescind_processed_events_pruned_total",
    "Processed-event ids deleted after their retention",
    ["service"],
)

E = TypeVar("E")
M = TypeVar("M", bound=Message)

LAG_INTERVAL = 1.0  # seconds between two observations of the lag gauge
# How long one poll may wait while the consumer (re)joins its group. kafka-python 3.0.12 forgets a
# join that completes while no poll is waiting on it and sends JoinGroup again; each join takes the
# broker seconds (Tansu ~3 s), so short polls with work between them could rejoin forever.
REJOIN_POLL_MS = 10_000
PRUNE_INTERVAL = 600.0  # seconds between two prunings of the processed-ids table
PRUNE_CHUNK = 5000  # rows deleted by one statement (one short transaction)
PRUNE_CHUNKS_PER_PASS = 4  # statements per pass at most: the rest waits for the next pass

# Event-type label values beside the declared types: no `event-type` header (and nothing decoded),
# or a value the consumer does not know (a label per arbitrary header value would be unbounded).
UNKNOWN_EVENT_TYPE = dead_letters.UNKNOWN
OTHER_EVENT_TYPE = "other"
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class PoisonMessage(Exception):
    """The record can never be handled (undecodable, unknown schema): dead-letter it at once."""


# Event types no consumer applies (checkpoints for auditors: `rescind audit verify`).
SKIPPED_EVENT_TYPES = frozenset({"audit_checkpoint"})


class SkippedEvent(Exception):
    """A record of a type no consumer applies (`SKIPPED_EVENT_TYPES`): committed past, untouched."""


def payload_types(message_cls: type[Message], oneof: str = "payload") -> tuple[str, ...]:
    """The field names of an envelope's oneof: the `event-type` values its outbox writes."""
    return tuple(f.name for f in message_cls.DESCRIPTOR.oneofs_by_name[oneof].fields)


def decode_event(message_cls: type[M], value: bytes | None, required: Sequence[str] = ("event_id",)) -> M:
    """Parse a protobuf event; `PoisonMessage` when it is empty, undecodable or lacks a required field."""
    if not value:
        raise PoisonMessage("empty record")
    name = message_cls.__name__
    try:
        event = message_cls.FromString(value)
    except Exception as exc:
        raise PoisonMessage(f"undecodable {name}: {exc}") from exc
    if "payload" in event.DESCRIPTOR.oneofs_by_name and event.WhichOneof("payload") in SKIPPED_EVENT_TYPES:
        raise SkippedEvent(str(event.WhichOneof("payload")))
    missing = [field for field in required if not getattr(event, field)]
    if missing:
        raise PoisonMessage(f"{name} without {' or '.join(missing)}")
    return event


def claim_events(session: Session, model: Any, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Record events as processed in one statement (INSERT ... ON CONFLICT DO NOTHING RETURNING);
    return the ids recorded now, i.e. not processed before. `model` has an `event_id` primary key.

    Inserting first means that a second consumer working on the same events (during a rebalance)
    blocks here until the first commits, then finds them taken. Rows go in id order so that two
    such consumers lock in the same order."""
    if not rows:
        return set()
    session.flush()  # the statement runs on the connection, past the ORM's autoflush
    conn = session.connection()
    stmt = _claim_statement(model.__table__, conn.dialect.name == "postgresql")
    ordered = sorted({row["event_id"]: row for row in rows}.values(), key=lambda row: str(row["event_id"]))
    # One statement built once per table: the rows go as parameters (one multi-row INSERT per
    # batch, "insertmanyvalues"), so it is compiled once, not for every poll.
    return {str(i) for i in conn.execute(stmt, ordered).scalars()}


@functools.cache
def _claim_statement(table: Any, postgres: bool) -> Any:
    insert = postgresql.insert if postgres else sqlite.insert
    stmt = insert(table).on_conflict_do_nothing(index_elements=["event_id"])
    return stmt.returning(table.c.event_id)


def apply_new(
    session: Session,
    model: Any,
    events: Sequence[E],
    row: Callable[[E], dict[str, Any]],
    effect: Callable[[Session, E], None],
) -> list[bool]:
    """Claim every event's id (`claim_events`), then run `effect` in order for the first copy of each
    event not processed before. One True/False per event: applied now or not (a repeat)."""
    rows = [row(event) for event in events]
    fresh = claim_events(session, model, rows)
    applied: list[bool] = []
    for event, r in zip(events, rows, strict=True):
        new = r["event_id"] in fresh
        fresh.discard(r["event_id"])  # a second copy in the same batch is a repeat
        if new:
            effect(session, event)
        applied.append(new)
    return applied


class BatchHandler(ABC, Generic[E]):
    """What a consumer needs from a service: decode a record, apply events in the caller's
    transaction, idempotently (a repeated event id changes nothing and returns False).

    `apply_batch` must give the same result as `apply` on each event in turn; the default does
    exactly that, subclasses make it cheaper (one statement for the processed ids)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    @abstractmethod
    def decode(self, value: bytes | None) -> E:
        """The event in a record's value; raises `PoisonMessage` for a record never applicable."""

    def decode_record(self, topic: str, value: bytes | None) -> E:
        """The event in a record of `topic`: what the consumer calls. A handler of several topics,
        each with its own message type, overrides this one; the others implement `decode`."""
        return self.decode(value)

    @abstractmethod
    def apply(self, session: Session, event: E) -> bool:
        """Apply one event; False when it had been applied before. May raise `PoisonMessage`."""

    def apply_batch(self, session: Session, events: Sequence[E]) -> list[bool]:
        return [self.apply(session, event) for event in events]

    def committed(self, event: E, applied: bool) -> None:
        """Called after the transaction that applied (or skipped) `event` committed: metrics."""


class _Item:
    """One polled record on its way through a batch."""

    __slots__ = ("done", "error", "event", "record")

    def __init__(self, record: ConsumerRecord) -> None:
        self.record = record
        self.event: Any = None
        self.error: PoisonMessage | None = None
        self.done = False


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        bootstrap: str,
        group_id: str,
        topics: list[str],
        handler: BatchHandler[Any],
        max_retries: int = 5,
        retry_backoff: float = 0.2,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        max_poll_records: int = 500,
        # How long a fetch may wait for records. Apache Kafka answers as soon as records arrive;
        # the embedded Tansu broker holds a fetch about half this long even then, so this bounds
        # a hop's latency there (bench/consumers.py). A longer wait means bigger polls: less CPU
        # per record where the hop's latency does not matter.
        fetch_max_wait_ms: int = 500,
        partitions: int = 6,
        replication_factor: int = 1,
        on_batch: Callable[[int], None] | None = None,
        processed_model: Any = None,
        processed_retention: dt.timedelta | None = None,
        prune_interval: float = PRUNE_INTERVAL,
        prune_chunk: int = PRUNE_CHUNK,
        prune_chunks_per_pass: int = PRUNE_CHUNKS_PER_PASS,
        event_types: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_records = max_poll_records
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.partitions = partitions
        self.replication_factor = replication_factor
        # Called after a batch's offsets are committed, with the number of records newly applied
        # (repeats and dead-lettered ones not counted): lets a process wake whatever reads them.
        self.on_batch = on_batch
        # The handler's processed-ids table (an `event_id` key and a `processed_at` time), pruned
        # when both it and a retention are given.
        if (processed_model is None) != (processed_retention is None):
            raise ValueError("processed_model and processed_retention go together")
        self.processed_model = processed_model
        self.processed_retention = processed_retention
        self.prune_interval = prune_interval
        self.prune_chunk = prune_chunk
        self.prune_chunks_per_pass = prune_chunks_per_pass
        # The event types the topics carry: their dead-letter series exist from the start; any
        # other header value counts as "other". Empty: any identifier-like value is its own label.
        self.event_types = frozenset(event_types)
        self._pruned_at = float("-inf")
        self.stop_event = threading.Event()
        # Ticked on every poll (at most `poll_once`'s timeout apart when idle, retries included) and
        # on every record applied one by one: /healthz.
        self.heartbeat = Heartbeat("consumer")
        self._consumer: KafkaConsumer | None = None
        self._dlq_producer: Any = None
        self._dlq_ready: set[str] = set()
        self._lag_partitions: set[tuple[str, str]] = set()
        self._topic_ids: dict[str, Any] = {}  # topic -> the id its log had when last polled
        self._lag_observed_at = float("-inf")
        self._db_backoff = retry_backoff
        # Every series from the start: increase()/rate() miss the first event of a series born at 1.
        if processed_model is not None:
            PROCESSED_PRUNED.labels(service)
        for topic in topics:
            DEAD_LETTERED.labels(service, topic)
            for event_type in (*event_types, UNKNOWN_EVENT_TYPE):
                DEAD_LETTERED_EVENTS.labels(service, topic, event_type)
            for outcome in ("ok", "dead_letter"):
                CONSUMED.labels(service, topic, outcome)

    def _connect(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap.split(","),
            group_id=self.group_id,
            client_id=f"{self.service}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_records=self.max_poll_records,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            # Notice recreated topics quickly (the embedded broker forgets them on restart).
            metadata_max_age_ms=3000,
            request_timeout_ms=30_000,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            reconnect_backoff_ms=200,
            reconnect_backoff_max_ms=2000,
            **security_config(),
        )
        consumer.subscribe(self.topics)
        return consumer

    def _event_type(self, record: ConsumerRecord, event: Any) -> str:
        value = dead_letters.header(record.headers, dead_letters.EVENT_TYPE)
        if not value and isinstance(event, Message) and "payload" in event.DESCRIPTOR.oneofs_by_name:
            value = event.WhichOneof("payload")  # a record published without headers
        if not value:
            return UNKNOWN_EVENT_TYPE
        known = value in self.event_types if self.event_types else _EVENT_TYPE.fullmatch(value)
        return value if known else OTHER_EVENT_TYPE

    def _dead_letter(self, record: ConsumerRecord, error: BaseException, event: Any = None) -> None:
        topic = dead_letter_topic(record.topic, self.service)
        if topic not in self._dlq_ready:
            admin = make_admin(self.bootstrap, f"{self.service}-dlq-admin")
            try:
                ensure_topics(admin, [topic], partitions=1, replication_factor=self.replication_factor)
            finally:
                admin.close()
            self._dlq_ready.add(topic)
        if self._dlq_producer is None:
            self._dlq_producer = make_producer(self.bootstrap, f"{self.service}-dlq")
        headers = [
            *(record.headers or []),
            (dead_letters.ORIGINAL_TOPIC, record.topic.encode()),
            (dead_letters.ORIGINAL_PARTITION, str(record.partition).encode()),
            (dead_letters.ORIGINAL_OFFSET, str(record.offset).encode()),
            (dead_letters.ERROR, f"{type(error).__name__}: {error}"[:500].encode()),
            (dead_letters.CONSUMER, self.service.encode()),
        ]
        self._dlq_producer.send(topic, key=record.key, value=record.value, headers=headers).get(timeout=30)
        event_type = self._event_type(record, event)
        DEAD_LETTERED.labels(self.service, record.topic).inc()
        DEAD_LETTERED_EVENTS.labels(self.service, record.topic, event_type).inc()
        CONSUMED.labels(self.service, record.topic, "dead_letter").inc()
        event_id = (
            dead_letters.header(record.headers, dead_letters.EVENT_ID)
            or str(getattr(event, "event_id", ""))
            or dead_letters.UNKNOWN
        )[:100]  # a header is whatever its producer wrote: keep the line bounded
        # Ids and types only: the error's text and the record's value stay in the dead letter.
        log.error(
            "dead-lettered %s event %s (%s[%d]@%d) to %s after %s: not applied until replayed "
            "(rescind dead-letters kafka replay --topic %s)",
            event_type,
            event_id,
            record.topic,
            record.partition,
            record.offset,
            topic,
            type(error).__name__,
            topic,
        )

    def database_reachable(self) -> bool:
        """Does the handler's database answer? (Also the readiness check of a consumer process.)"""
        try:
            with self.handler.session_factory() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def _applied(self, item: _Item, applied: bool) -> None:
        self.handler.committed(item.event, applied)
        CONSUMED.labels(self.service, item.record.topic, "ok").inc()
        item.done = True

    def _apply_batch(self, good: list[_Item]) -> list[bool]:
        """Every decodable record of a poll in one transaction."""
        if not good:
            return []
        with self.handler.session_factory() as session, session.begin():
            results = self.handler.apply_batch(session, [item.event for item in good])
        if len(results) != len(good):
            raise RuntimeError(f"apply_batch gave {len(results)} results for {len(good)} events")
        return results

    def _apply_one(self, item: _Item) -> bool | None:
        """One record in its own transaction with bounded retries, then the dead-letter topic.
        True/False: applied now or a repeat; None: left undone (stopping, or the database is away)."""
        attempt = 0
        while True:
            try:
                with self.handler.session_factory() as session, session.begin():
                    applied = self.handler.apply(session, item.event)
            except PoisonMessage as exc:
                self._dead_letter(item.record, exc, item.event)
                item.done = True
                return False
            except Exception as exc:
                attempt += 1
                if self.stop_event.is_set():
                    return None
                if attempt > self.max_retries:
                    if not self.database_reachable():
                        return None  # not this record's fault: try it again later
                    self._dead_letter(item.record, exc, item.event)
                    item.done = True
                    return False
                log.warning("handler failed (attempt %d/%d): %s", attempt, self.max_retries, exc)
                self.stop_event.wait(min(self.retry_backoff * 2 ** (attempt - 1), 5.0))
                continue
            self._applied(item, applied)
            return applied

    def _apply_one_by_one(self, items: list[_Item]) -> int:
        applied = 0
        for item in items:
            if self.stop_event.is_set():
                break
            self.heartbeat.tick()  # each record can take its retries: still going round
            if item.error is not None:
                self._dead_letter(item.record, item.error)
                item.done = True
                continue
            outcome = self._apply_one(item)
            if outcome is None:
                break
            applied += outcome
        return applied

    def _skipped(self, item: _Item) -> bool:
        """Audit checkpoints ride every topic (rescind_common.audit_chain); no consumer applies
        them: each skips them and commits past them."""
        if dead_letters.header(item.record.headers, dead_letters.EVENT_TYPE) in SKIPPED_EVENT_TYPES:
            return True
        event = item.event
        return (
            isinstance(event, Message)
            and "payload" in event.DESCRIPTOR.oneofs_by_name
            and event.WhichOneof("payload") in SKIPPED_EVENT_TYPES
        )

    def _process(self, items: list[_Item]) -> int:
        """Apply a poll's records; the number newly applied. Marks the records done."""
        for item in items:
            if self._skipped(item):
                item.done = True
                continue
            try:
                item.event = self.handler.decode_record(item.record.topic, item.record.value)
            except SkippedEvent:
                item.done = True
                continue
            except PoisonMessage as exc:
                item.error = exc
                continue
            if self._skipped(item):
                item.done = True
        items = [item for item in items if not item.done]
        good = [item for item in items if item.error is None]
        try:
            results = self._apply_batch(good)
        except Exception as exc:
            if not self.database_reachable():
                log.warning(
                    "database unreachable (%s: %s); %d records will come again",
                    type(exc).__name__,
                    exc,
                    len(items),
                )
                return 0
            log.warning(
                "batch of %d records failed (%s: %s); applying them one at a time",
                len(good),
                type(exc).__name__,
                exc,
            )
            return self._apply_one_by_one(items)
        for item, applied in zip(good, results, strict=True):
            self._applied(item, applied)
        for item in items:
            if item.error is not None:
                self._dead_letter(item.record, item.error)
                item.done = True
        return sum(results)

    def _commit(self, consumer: KafkaConsumer, items: list[_Item]) -> int:
        """Commit, in one request, every partition's offset past its records done (in order); seek
        back to the first record not done, so that the next poll brings it again. Records done."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        rewind: dict[TopicPartition, int] = {}
        for item in items:
            tp = TopicPartition(item.record.topic, item.record.partition)
            if tp in rewind:
                continue
            if item.done:
                offsets[tp] = OffsetAndMetadata(item.record.offset + 1, "", -1)
            else:
                rewind[tp] = item.record.offset
        if offsets:
            consumer.commit(offsets)
        if rewind and not self.stop_event.is_set():
            for tp, offset in rewind.items():
                consumer.seek(tp, offset)
            # Records left undone because the database is away: do not spin on them.
            self.stop_event.wait(self._db_backoff)
            self._db_backoff = min(self._db_backoff * 2, 5.0)
        else:
            self._db_backoff = self.retry_backoff
        return sum(item.done for item in items)

    def poll_once(self, timeout_ms: int = 500) -> int:
        """One poll: its records applied and committed; the number of records done."""
        if self._consumer is None:
            self._consumer = self._connect()
        consumer = self._consumer
        rejoining = self._rejoining(consumer)
        polled = consumer.poll(timeout_ms=max(timeout_ms, REJOIN_POLL_MS) if rejoining else timeout_ms)
        renewed = self._renewed_logs(consumer)
        items = [
            _Item(record)
            for tp, records in polled.items()
            if tp.topic not in renewed  # read again from the start of the new log instead
            for record in records
        ]
        done = 0
        # Stopping: leave whatever was polled uncommitted; the next owner gets it.
        if items and not self.stop_event.is_set():
            applied = self._process(items)
            done = self._commit(consumer, items)
            if done and self.on_batch is not None:
                try:
                    self.on_batch(applied)
                except Exception:
                    log.exception("on_batch hook failed")
        self._maybe_prune()
        now = time.monotonic()
        # After every batch (the lag just changed) and otherwise once a second: idle polls every
        # 500 ms need not ask for positions each time.
        # Not while rejoining: asking for a position then blocks (up to a second) outside any poll.
        if not rejoining and (items or now - self._lag_observed_at >= LAG_INTERVAL):
            self._lag_observed_at = now
            self._observe_lag(consumer)
        return done

    @staticmethod
    def _rejoining(consumer: KafkaConsumer) -> bool:
        """Whether the consumer is about to (re)join its group or is in the middle of it."""
        try:
            return bool(consumer._coordinator.need_rejoin())
        except Exception:  # the client's internals moved: poll as usual
            return False

    def _renewed_logs(self, consumer: KafkaConsumer) -> set[str]:
        """The subscribed topics whose log changed since the last poll (another topic id in the
        client's metadata), each sought back to the beginning of its assigned partitions."""
        cluster = consumer._client.cluster  # the client's metadata, refreshed every few seconds
        renewed: set[str] = set()
        assigned = consumer.assignment()
        for topic in self.topics:
            topic_id = cluster.topic_id(topic)
            if topic_id is None:
                continue
            before = self._topic_ids.get(topic)
            if before is not None and before != topic_id:
                tps = [tp for tp in assigned if tp.topic == topic]
                if not tps:
                    continue  # not assigned now (rejoining): seek once its partitions are back
                consumer.seek_to_beginning(*tps)
                renewed.add(topic)
                log.warning(
                    "the log of %s was renewed (topic id %s): reading it from the start", topic, topic_id
                )
            self._topic_ids[topic] = topic_id
        return renewed

    def prune_processed(self) -> int:
        """Delete processed-event rows older than the retention, at most `prune_chunks_per_pass`
        chunks of `prune_chunk` rows, each in its own short transaction; the number deleted."""
        if self.processed_model is None or self.processed_retention is None:
            return 0
        table = self.processed_model.__table__
        cutoff = utcnow() - self.processed_retention
        # The `processed_at` index finds the chunk; SKIP LOCKED (PostgreSQL; SQLite ignores it) lets
        # several replicas prune at once without waiting on each other's rows.
        chunk = (
            select(table.c.event_id)
            .where(table.c.processed_at < cutoff)
            .limit(self.prune_chunk)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = delete(table).where(table.c.event_id.in_(chunk))
        total = 0
        for _ in range(self.prune_chunks_per_pass):
            with self.handler.session_factory() as session, session.begin():
                deleted = int(session.connection().execute(stmt).rowcount or 0)
            total += deleted
            PROCESSED_PRUNED.labels(self.service).inc(deleted)
            if deleted < self.prune_chunk or self.stop_event.is_set():
                break
        if total:
            log.info("pruned %d processed events older than %s", total, cutoff.isoformat())
        return total

    def _maybe_prune(self) -> None:
        # At most once per `prune_interval`, and on its own: a failure (database down, a lock
        # timeout) is logged and tried again at the next interval, never stopping the loop.
        if self.processed_model is None or time.monotonic() - self._pruned_at < self.prune_interval:
            return
        self._pruned_at = time.monotonic()
        try:
            self.prune_processed()
        except Exception as exc:
            log.warning("pruning processed events failed (%s: %s)", type(exc).__name__, exc)

    def _observe_lag(self, consumer: KafkaConsumer) -> None:
        assigned = {(tp.topic, str(tp.partition)) for tp in consumer.assignment()}
        # Partitions moved to another member by a rebalance: drop their series, or this process would
        # keep reporting a stale lag for them next to the new owner's.
        for topic, partition in self._lag_partitions - assigned:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.service, topic, partition)
        self._lag_partitions = assigned
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = consumer.position(tp, timeout_ms=1000)
            except Exception:
                log.debug("no position for %s", tp, exc_info=True)
                position = None
            if position is not None:
                CONSUMER_LAG.labels(self.service, tp.topic, str(tp.partition)).set(max(0, high - position))

    def run(self) -> None:
        log.info("consumer %s started on %s (group %s)", self.service, self.topics, self.group_id)
        backoff = 0.2
        while not self.stop_event.is_set():
            self.heartbeat.tick()
            try:
                self.poll_once()
                backoff = 0.2
            except Exception as exc:
                log.warning(
                    "consumer error (%s: %s); reconnecting in %.1fs", type(exc).__name__, exc, backoff
                )
                self._close()
                self.heartbeat.tick()  # a failed turn is still a turn: retrying is not wedged
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._close()
        log.info("consumer %s stopped", self.service)

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:
                log.debug("consumer close failed", exc_info=True)
            self._consumer = None
        if self._dlq_producer is not None:
            try:
                self._dlq_producer.close(timeout=1)
            except Exception:
                log.debug("dlq producer close failed", exc_info=True)
            self._dlq_producer = None
