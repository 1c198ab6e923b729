from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from registry.projection.models import (
    ProcessedEvent,
    ProjectedConsent,
    ProjectedConsentSample,
    ProjectedSample,
    SubjectErasure,
)
from registry.sql import among, id_chunks, insert_ignoring_duplicates


def add_samples(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    insert_ignoring_duplicates(session, ProjectedSample, rows, ["sample_id"])


def get_consent(session: Session, consent_id: str, *, lock: bool = False) -> ProjectedConsent | None:
    stmt = select(ProjectedConsent).where(ProjectedConsent.consent_id == consent_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def consent_exists(session: Session, consent_id: str) -> bool:
    stmt = select(ProjectedConsent.consent_id).where(ProjectedConsent.consent_id == consent_id)
    return session.scalar(stmt) is not None


def add_consent_samples(session: Session, consent_id: str, sample_ids: Sequence[str]) -> None:
    rows = [{"consent_id": consent_id, "sample_id": s, "revoked": False} for s in sample_ids]
    insert_ignoring_duplicates(session, ProjectedConsentSample, rows, ["consent_id", "sample_id"])


def consent_sample_states(session: Session, consent_id: str, sample_ids: Sequence[str]) -> dict[str, bool]:
    """sample id -> revoked?, for those of `sample_ids` the consent covers (or covered)."""
    out: dict[str, bool] = {}
    for part in id_chunks(session, sample_ids):
        rows = session.execute(
            select(ProjectedConsentSample.sample_id, ProjectedConsentSample.revoked).where(
                ProjectedConsentSample.consent_id == consent_id,
                among(session, ProjectedConsentSample.sample_id, part),
            )
        )
        out.update({str(s): bool(r) for s, r in rows})
    return out


def revoke_consent_samples(
    session: Session, consent_id: str, sample_ids: Sequence[str] | None, revocation_id: str, at: dt.datetime
) -> None:
    """Withdraw these samples (None: every sample) from the consent; already withdrawn ones keep
    their first revocation."""
    base = (
        update(ProjectedConsentSample)
        .where(ProjectedConsentSample.consent_id == consent_id, ProjectedConsentSample.revoked.is_(False))
        .values(revoked=True, revoked_at=at, revocation_id=revocation_id)
    )
    if sample_ids is None:
        session.execute(base)
        return
    # Samples the grant never mentioned (an out-of-order revocation) are recorded as withdrawn.
    add_consent_samples(session, consent_id, sample_ids)
    for part in id_chunks(session, sample_ids):
        session.execute(base.where(among(session, ProjectedConsentSample.sample_id, part)))


def known_samples(session: Session, sample_ids: Sequence[str]) -> dict[str, ProjectedSample]:
    out: dict[str, ProjectedSample] = {}
    for part in id_chunks(session, sample_ids):
        for s in session.scalars(
            select(ProjectedSample).where(among(session, ProjectedSample.sample_id, part))
        ):
            out[s.sample_id] = s
    return out


def add_erasure(
    session: Session, revocation_id: str, subject_id: str, sample_count: int, at: dt.datetime | None
) -> None:
    if session.get(SubjectErasure, revocation_id) is None:
        session.add(
            SubjectErasure(
                revocation_id=revocation_id, subject_id=subject_id, sample_count=sample_count, occurred_at=at
            )
        )


def processed_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0)


def sample_refs(session: Session, sample_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """sample id -> (sha256, kind) for the ones the projection knows, as plain rows."""
    conn = session.connection()
    out: dict[str, tuple[str, str]] = {}
    for part in id_chunks(session, sample_ids):
        stmt = select(ProjectedSample.sample_id, ProjectedSample.sha256, ProjectedSample.kind)
        out.update(
            (s, (h, k))
            for s, h, k in conn.execute(stmt.where(among(session, ProjectedSample.sample_id, part)))
        )
    return out
