"""consent-api's outbox relay."""

from __future__ import annotations

import datetime as dt

from consent_api.config import ConsentSettings
from consent_api.db import Outbox, OutboxLog
from rescind_common.db import make_engine
from rescind_common.outbox import OutboxRelay


def build_relay(settings: ConsentSettings) -> OutboxRelay:
    return OutboxRelay(
        make_engine(settings.consent_database_url, pool_size=2),
        Outbox,
        log_model=OutboxLog,
        service="consent-api",
        bootstrap=settings.kafka_bootstrap,
        topics=[settings.kafka_consent_topic],
        partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        fallback_interval=settings.outbox_fallback_poll_seconds,
        retention=dt.timedelta(hours=settings.outbox_retention_hours),
    )
