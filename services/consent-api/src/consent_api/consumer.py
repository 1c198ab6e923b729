"""consent-api's notice-topic consumer: per-licensee statuses of each revocation."""

from __future__ import annotations

import datetime as dt

from consent_api.config import ConsentSettings
from consent_api.notices.handler import NoticeEventHandler
from consent_api.notices.models import ProcessedEvent
from rescind_common.consumer import EventConsumer, payload_types
from rescind_common.db import make_engine, make_session_factory
from rescind_common.proto.rescind.v1 import notice_events_pb2


def build_consumer(settings: ConsentSettings) -> EventConsumer:
    engine = make_engine(settings.consent_database_url, pool_size=2)
    return EventConsumer(
        service="consent-api",
        bootstrap=settings.kafka_bootstrap,
        group_id=settings.consent_consumer_group,
        topics=[settings.kafka_notice_topic],
        handler=NoticeEventHandler(make_session_factory(engine)),
        partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        fetch_max_wait_ms=settings.consent_consumer_fetch_max_wait_ms,
        processed_model=ProcessedEvent,
        processed_retention=dt.timedelta(hours=settings.processed_events_retention_hours),
        event_types=payload_types(notice_events_pb2.NoticeEvent),
    )
