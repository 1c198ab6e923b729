"""Every table, imported once so that Alembic and the app see the whole schema."""

from revocation_worker.ackkeys.models import AckKey
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
from revocation_worker.policy.models import LicenseePolicy

__all__ = [
    "AckKey",
    "Base",
    "Delivery",
    "DeliveryAttempt",
    "Endpoint",
    "LicenseePolicy",
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

# After every table: the audit chains record writes to the endpoint, notice and delivery tables.
from revocation_worker.audit.models import (
    AuditCheckpoint,
    AuditCheckpointHead,
    AuditEntry,
    AuditHead,
)
from revocation_worker.audit.recording import install as _install_audit

_install_audit()
__all__ += ["AuditCheckpoint", "AuditCheckpointHead", "AuditEntry", "AuditHead"]
