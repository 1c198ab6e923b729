"""registry's outbox relay: license events to the license topic."""

from __future__ import annotations

from registry.config import RegistrySettings
from registry.db import Outbox, OutboxLog
from rescind_common.db import make_engine
from rescind_common.outbox import OutboxRelay


def build_relay(settings: RegistrySettings) -> OutboxRelay:
    return OutboxRelay.from_settings(
        settings,
        make_engine(settings.registry_database_url, pool_size=2),
        Outbox,
        log_model=OutboxLog,
        service="registry",
        topics=[settings.kafka_license_topic],
    )
