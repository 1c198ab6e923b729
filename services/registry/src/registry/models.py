"""Every table, imported once so that Alembic and the app see the whole schema."""

from registry.db import Base, Outbox, OutboxLog
from registry.licensees.models import Licensee
from registry.licenses.models import License, LicenseSample
from registry.lineage.models import ModelLicense, TrainedModel
from registry.projection.models import (
    ProcessedEvent,
    ProjectedConsent,
    ProjectedConsentSample,
    ProjectedSample,
    SubjectErasure,
)

__all__ = [
    "Base",
    "License",
    "LicenseSample",
    "Licensee",
    "ModelLicense",
    "Outbox",
    "OutboxLog",
    "ProcessedEvent",
    "ProjectedConsent",
    "ProjectedConsentSample",
    "ProjectedSample",
    "SubjectErasure",
    "TrainedModel",
]

# After every table: the audit chains record writes to the licensee, license and model tables.
from registry.audit.models import AuditCheckpoint, AuditCheckpointHead, AuditEntry, AuditHead
from registry.audit.recording import install as _install_audit

_install_audit()
__all__ += ["AuditCheckpoint", "AuditCheckpointHead", "AuditEntry", "AuditHead"]
