"""The consent-topic consumer that keeps the projection: decode, apply in one transaction, commit.

The loop itself (manual offset commits after the transaction, bounded retries, dead-letter topic,
reconnects) is rescind_common.consumer.EventConsumer; this module only supplies the handler.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from registry import models  # noqa: F401  (registers every table: the handler touches several)
from registry.config import RegistrySettings
from registry.db import make_registry_engine
from registry.projection.service import InvalidEvent, apply_event
from rescind_common.consumer import EventConsumer, Handler, PoisonMessage
from rescind_common.db import make_session_factory
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

SERVICE = "registry"

PROJECTED = Counter(
    "rescind_registry_projection_events_total",
    "Consent events seen by the registry projection",
    ["event_type", "outcome"],  # outcome: applied | duplicate
)


def decode(value: bytes | None) -> pb.ConsentEvent:
    if not value:
        raise PoisonMessage("empty record")
    try:
        event = pb.ConsentEvent.FromString(value)
    except DecodeError as exc:
        raise PoisonMessage(f"not a ConsentEvent: {exc}") from exc
    if not event.event_id or not event.subject_id:
        raise PoisonMessage("a ConsentEvent needs event_id and subject_id")
    return event


def make_handler(session_factory: sessionmaker[Session]) -> Handler:
    def handle(record: ConsumerRecord) -> None:
        event = decode(record.value)
        try:
            with session_factory() as session, session.begin():
                applied = apply_event(session, event)
        except InvalidEvent as exc:
            raise PoisonMessage(str(exc)) from exc
        outcome = "applied" if applied else "duplicate"
        PROJECTED.labels(event.WhichOneof("payload") or "unknown", outcome).inc()

    return handle


def build_consumer(
    settings: RegistrySettings,
    session_factory: sessionmaker[Session] | None = None,
    *,
    group_id: str | None = None,
    **overrides: Any,
) -> EventConsumer:
    if session_factory is None:
        session_factory = make_session_factory(
            make_registry_engine(settings.registry_database_url, pool_size=2)
        )
    options: dict[str, Any] = {
        "max_retries": settings.registry_consumer_max_retries,
        "partitions": settings.kafka_topic_partitions,
        "replication_factor": settings.kafka_replication_factor,
    }
    options.update(overrides)
    return EventConsumer(
        service=SERVICE,
        bootstrap=settings.kafka_bootstrap,
        group_id=group_id or settings.registry_consumer_group,
        topics=[settings.kafka_consent_topic],
        handler=make_handler(session_factory),
        **options,
    )
