"""consent-api's outbox relay."""

from __future__ import annotations

from consent_api.config import ConsentSettings
from consent_api.db import Outbox, OutboxLog
from rescind_common.db import make_engine
from rescind_common.outbox import OutboxRelay


def build_relay(settings: ConsentSettings) -> OutboxRelay:
    return OutboxRelay.from_settings(
        settings,
        make_engine(settings.consent_database_url, pool_size=2),
        Outbox,
        log_model=OutboxLog,
        service="consent-api",
        topics=[settings.kafka_consent_topic],
    )
