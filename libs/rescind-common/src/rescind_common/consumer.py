"""A thin Kafka consumer loop: decode, call a handler, commit — then the next record.

- auto-commit is off; an offset is committed only after the handler returned, i.e. after the
  handler's own database transaction committed. Redelivery after a crash is expected: handlers
  are idempotent (they record processed event ids in the same transaction).
- a failing record is retried a bounded number of times with backoff, then sent to the
  dead-letter topic with its error, and the loop moves on; `PoisonMessage` skips the retries.
- SIGTERM/SIGINT (via `stop_event`) stops the loop; offsets are committed on the way out.
- any client error (a broker restart, for one) closes the consumer and builds a new one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Gauge

from rescind_common.kafka import ensure_topics, make_admin, make_producer, security_config

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

Handler = Callable[[ConsumerRecord], None]


class PoisonMessage(Exception):
    """The record can never be handled (undecodable, unknown schema): dead-letter it at once."""


def dead_letter_topic(topic: str, service: str) -> str:
    return f"{topic}.{service}.dlq"


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        bootstrap: str,
        group_id: str,
        topics: list[str],
        handler: Handler,
        max_retries: int = 5,
        retry_backoff: float = 0.2,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        max_poll_records: int = 200,
        partitions: int = 6,
        replication_factor: int = 1,
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
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.stop_event = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._dlq_producer: Any = None
        self._dlq_ready: set[str] = set()
        self._lag_partitions: set[tuple[str, str]] = set()
        # Every series from the start: increase()/rate() miss the first event of a series born at 1.
        for topic in topics:
            DEAD_LETTERED.labels(service, topic)
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
            # Notice recreated topics quickly (the embedded broker forgets them on restart).
            metadata_max_age_ms=3000,
            request_timeout_ms=30_000,
            reconnect_backoff_ms=200,
            reconnect_backoff_max_ms=2000,
            **security_config(),
        )
        consumer.subscribe(self.topics)
        return consumer

    def _dead_letter(self, record: ConsumerRecord, error: BaseException) -> None:
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
            ("dlq-original-topic", record.topic.encode()),
            ("dlq-original-partition", str(record.partition).encode()),
            ("dlq-original-offset", str(record.offset).encode()),
            ("dlq-error", f"{type(error).__name__}: {error}"[:500].encode()),
            ("dlq-consumer", self.service.encode()),
        ]
        self._dlq_producer.send(topic, key=record.key, value=record.value, headers=headers).get(timeout=30)
        DEAD_LETTERED.labels(self.service, record.topic).inc()
        log.error(
            "dead-lettered %s[%d]@%d after error %s",
            record.topic,
            record.partition,
            record.offset,
            type(error).__name__,
        )

    def _handle(self, record: ConsumerRecord) -> None:
        attempt = 0
        while True:
            try:
                self.handler(record)
                CONSUMED.labels(self.service, record.topic, "ok").inc()
                return
            except PoisonMessage as exc:
                self._dead_letter(record, exc)
                CONSUMED.labels(self.service, record.topic, "dead_letter").inc()
                return
            except Exception as exc:
                attempt += 1
                if attempt > self.max_retries or self.stop_event.is_set():
                    if self.stop_event.is_set():
                        raise  # stopping: leave it uncommitted, it will be redelivered
                    self._dead_letter(record, exc)
                    CONSUMED.labels(self.service, record.topic, "dead_letter").inc()
                    return
                log.warning("handler failed (attempt %d/%d): %s", attempt, self.max_retries, exc)
                time.sleep(min(self.retry_backoff * 2 ** (attempt - 1), 5.0))

    def poll_once(self, timeout_ms: int = 500) -> int:
        if self._consumer is None:
            self._consumer = self._connect()
        consumer = self._consumer
        batches = consumer.poll(timeout_ms=timeout_ms)
        handled = 0
        for tp, records in batches.items():
            for record in records:
                if self.stop_event.is_set():
                    break
                self._handle(record)
                handled += 1
                consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
        self._observe_lag(consumer)
        return handled

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
            try:
                self.poll_once()
                backoff = 0.2
            except Exception as exc:
                log.warning(
                    "consumer error (%s: %s); reconnecting in %.1fs", type(exc).__name__, exc, backoff
                )
                self._close()
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


def topic_partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]
