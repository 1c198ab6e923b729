"""The consent-topic consumer that keeps the projection: decode a poll, apply it in one transaction,
commit.

The loop itself (manual offset commits after the transaction, bounded retries, dead-letter topic,
reconnects) is rescind_common.consumer.EventConsumer; this module only supplies the handler.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from registry import models  # noqa: F401  (registers every table: the handler touches several)
from registry.config import RegistrySettings
from registry.db import make_registry_engine
from registry.projection.models import ProcessedEvent
from registry.projection.service import LICENSE_TOPIC, InvalidEvent, apply_events, check_event
from rescind_common.consumer import BatchHandler, EventConsumer, PoisonMessage, decode_event, payload_types
from rescind_common.db import make_session_factory
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

SERVICE = "registry"

PROJECTED = Counter(
    "rescind_registry_projection_events_total",
    "Consent events seen by the registry projection",
    ["event_type", "outcome"],  # outcome: applied | duplicate
)


def decode(value: bytes | None) -> pb.ConsentEvent:
    event = decode_event(pb.ConsentEvent, value, required=("event_id", "subject_id"))
    try:
        check_event(event)
    except InvalidEvent as exc:
        raise PoisonMessage(str(exc)) from exc
    return event


class ProjectionHandler(BatchHandler[pb.ConsentEvent]):
    def __init__(self, session_factory: sessionmaker[Session], *, license_topic: str = LICENSE_TOPIC) -> None:
        super().__init__(session_factory)
        # Where the projection's license events go (its outbox rows' topic).
        self.license_topic = license_topic

    def decode(self, value: bytes | None) -> pb.ConsentEvent:
        return decode(value)

    def apply(self, session: Session, event: pb.ConsentEvent) -> bool:
        return self.apply_batch(session, [event])[0]

    def apply_batch(self, session: Session, events: Sequence[pb.ConsentEvent]) -> list[bool]:
        try:
            return apply_events(session, events, license_topic=self.license_topic)
        except InvalidEvent as exc:
            raise PoisonMessage(str(exc)) from exc

    def committed(self, event: pb.ConsentEvent, applied: bool) -> None:
        PROJECTED.labels(
            event.WhichOneof("payload") or "unknown", "applied" if applied else "duplicate"
        ).inc()


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
        "fetch_max_wait_ms": settings.registry_consumer_fetch_max_wait_ms,
        "processed_model": ProcessedEvent,
        "processed_retention": dt.timedelta(hours=settings.processed_events_retention_hours),
        "event_types": payload_types(pb.ConsentEvent),
    }
    options.update(overrides)
    return EventConsumer(
        service=SERVICE,
        bootstrap=settings.kafka_bootstrap,
        group_id=group_id or settings.registry_consumer_group,
        topics=[settings.kafka_consent_topic],
        handler=ProjectionHandler(session_factory, license_topic=settings.kafka_license_topic),
        **options,
    )
