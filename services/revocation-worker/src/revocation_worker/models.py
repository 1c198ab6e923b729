"""Every table, imported once so that Alembic and the app see the whole schema."""

from revocation_worker.db import Base, Outbox, OutboxLog, ProcessedEvent
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.intake.models import Revocation, RevocationPart, RevocationRecheck
from revocation_worker.notices.models import (
    Delivery,
    DeliveryAttempt,
    Notice,
    NoticeLicense,
    NoticeModel,
    NoticeSample,
    RevocationSample,
    RevocationSampleSet,
)

__all__ = [
    "Base",
    "Delivery",
    "DeliveryAttempt",
    "Endpoint",
    "Notice",
    "NoticeLicense",
    "NoticeModel",
    "NoticeSample",
    "Outbox",
    "OutboxLog",
    "ProcessedEvent",
    "Revocation",
    "RevocationPart",
    "RevocationRecheck",
    "RevocationSample",
    "RevocationSampleSet",
]
