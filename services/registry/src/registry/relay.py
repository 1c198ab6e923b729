"""registry's outbox relay: license events to the license topic."""

from __future__ import annotations

import datetime as dt

from registry.config import RegistrySettings
from registry.db import Outbox, OutboxLog
from rescind_common.db import make_engine
from rescind_common.outbox import OutboxRelay


def build_relay(settings: RegistrySettings) -> OutboxRelay:
    return OutboxRelay(
        make_engine(settings.registry_database_url, pool_size=2),
        Outbox,
        log_model=OutboxLog,
        service="registry",
        bootstrap=settings.kafka_bootstrap,
        topics=[settings.kafka_license_topic],
        partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        fallback_interval=settings.outbox_fallback_poll_seconds,
        retention=dt.timedelta(hours=settings.outbox_retention_hours),
    )
