from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_api.audit.models import AuditEntry
from consent_api.consents.models import Consent
from consent_api.revocations.models import Revocation, RevocationItem
from consent_api.samples.models import Sample


def revocation(session: Session, revocation_id: str, subject_id: str | None) -> Revocation | None:
    """The revocation; only the subject's own when `subject_id` is given (None: an operator's)."""
    stmt = select(Revocation).where(Revocation.id == revocation_id)
    if subject_id is not None:
        stmt = stmt.where(Revocation.subject_id == subject_id)
    return session.scalars(stmt).one_or_none()


def withdrawn_sha256s(session: Session, revocation_id: str) -> list[str]:
    """The content hashes of the samples the revocation withdrew (each sample once)."""
    rows = session.scalars(
        select(Sample.sha256)
        .where(
            Sample.id.in_(
                select(RevocationItem.sample_id).where(RevocationItem.revocation_id == revocation_id)
            )
        )
        .order_by(Sample.sha256)
    )
    return list(rows)


def consents(session: Session, consent_ids: list[str]) -> list[Consent]:
    if not consent_ids:
        return []
    return list(session.scalars(select(Consent).where(Consent.id.in_(consent_ids)).order_by(Consent.id)))


def revocation_entry(session: Session, subject_id: str, revocation_id: str) -> AuditEntry | None:
    """The audit entry that recorded the revocation itself."""
    return session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.subject_id == subject_id,
            AuditEntry.entity_id == revocation_id,
            AuditEntry.action == "consent.revoked",
        )
        .order_by(AuditEntry.seq)
        .limit(1)
    ).one_or_none()
