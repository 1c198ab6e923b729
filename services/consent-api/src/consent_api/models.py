"""Every table, imported once so that Alembic and the app see the whole schema."""

from consent_api.audit.models import AuditCheckpoint, AuditCheckpointHead, AuditEntry
from consent_api.consents.models import Consent, ConsentSample
from consent_api.db import Base, Outbox, OutboxLog
from consent_api.notices.models import ProcessedEvent, RevocationNotice, RevocationResolution
from consent_api.revocations.models import Revocation, RevocationItem
from consent_api.rights.models import RightsRequest
from consent_api.samples.models import Sample
from consent_api.subjects.models import Subject, SubjectKey

__all__ = [
    "AuditCheckpoint",
    "AuditCheckpointHead",
    "AuditEntry",
    "Base",
    "Consent",
    "ConsentSample",
    "Outbox",
    "OutboxLog",
    "ProcessedEvent",
    "Revocation",
    "RevocationItem",
    "RevocationNotice",
    "RevocationResolution",
    "RightsRequest",
    "Sample",
    "Subject",
    "SubjectKey",
]
