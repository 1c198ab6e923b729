"""Helpers for tests that use the real broker: reading a topic, running the relay, reading the outbox."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consent_api.config import ConsentSettings
from consent_api.db import Outbox
from consent_api.relay import build_relay
from rescind_common.embedded_broker import EmbeddedBroker
from rescind_common.metrics import OUTBOX_PUBLISH_ERRORS
from rescind_common.outbox import OutboxRelay
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

WAIT = 20.0  # seconds: the bound for "eventually" in these tests


def unique_topic(label: str = "t") -> str:
    return f"test.{label}.{uuid.uuid4().hex[:12]}"


@dataclass
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def event(self) -> pb.ConsentEvent:
        return pb.ConsentEvent.FromString(self.value)

    @property
    def event_type(self) -> str:
        return str(self.event.WhichOneof("payload"))

    def described(self) -> str:
        """Its event type, for a message on a topic of consent events; else its size."""
        try:
            return self.event_type
        except DecodeError:
            return f"{len(self.value)} bytes"

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Record]], bool],
    *,
    timeout: float = WAIT,
) -> list[Record]:
    """Read `topic` from the beginning of every partition (assign + seek, no group join: slow on Tansu)
    until `until(records)` holds; return every record read, per partition in offset order."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        request_timeout_ms=10_000,
        reconnect_backoff_ms=100,
        reconnect_backoff_max_ms=1_000,
    )
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] = set()
        while not partitions:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} did not appear on {bootstrap} within {timeout}s")
                time.sleep(0.1)
                consumer.poll(timeout_ms=0)  # lets the client refresh its metadata
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Record] = []
        while True:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(
                    Record(r.partition, r.offset, r.key, r.value, list(r.headers or [])) for r in batch
                )
            if until(records):
                return records
            if time.monotonic() > deadline:
                seen = [(r.key, r.described()) for r in records]
                raise AssertionError(f"timed out after {timeout}s reading {topic}; read {seen}")
    finally:
        consumer.close()


def for_key(records: list[Record], key: str) -> list[Record]:
    """The records of one key, in log order (one key lives on one partition)."""
    mine = [r for r in records if r.key == key.encode()]
    assert len({r.partition for r in mine}) <= 1, "one key must map to one partition"
    return sorted(mine, key=lambda r: r.offset)


def has_types(key: str, *types: str) -> Callable[[list[Record]], bool]:
    """Predicate: the records of `key` include each of these event types (as many times as listed)."""

    def check(records: list[Record]) -> bool:
        seen = [r.event_type for r in for_key(records, key)]
        return all(seen.count(t) >= types.count(t) for t in set(types))

    return check


def outbox_rows(engine: Engine, topic: str) -> list[Any]:
    with Session(engine) as session:
        return list(session.scalars(select(Outbox).where(Outbox.topic == topic).order_by(Outbox.id)))


def publish_errors() -> float:
    return float(OUTBOX_PUBLISH_ERRORS.labels("consent-api")._value.get())


class RelayThread:
    """The consent-api relay (`build_relay`) running `run()` in a thread, as `consent-api relay` does."""

    def __init__(self, settings: ConsentSettings, **attrs: Any) -> None:
        self.relay: OutboxRelay = build_relay(settings)
        for name, value in attrs.items():
            setattr(self.relay, name, value)
        self.thread = threading.Thread(target=self.relay.run, name="test-relay", daemon=True)

    def __enter__(self) -> OutboxRelay:
        self.thread.start()
        return self.relay

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.relay.stop_event.set()
        # A relay blocked in a Kafka bootstrap gives up after 30 s at most.
        self.thread.join(timeout=45)
        self.relay.engine.dispose()
        assert not self.thread.is_alive(), "relay thread did not stop"


@contextlib.contextmanager
def own_broker(port: int, log_file: Any = None) -> Iterator[EmbeddedBroker]:
    """An EmbeddedBroker on a fixed port, always stopped (killed if need be) on exit."""
    broker = EmbeddedBroker(port, log_file=log_file).start()
    try:
        yield broker
    finally:
        broker.stop(kill=True)
