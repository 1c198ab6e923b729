from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_api.consents.models import Consent
from consent_api.revocations.models import Revocation
from consent_api.rights.models import RightsRequest
from consent_api.samples.models import Sample
from rescind_common.db import keyset_page


def get(session: Session, subject_id: str, request_id: str) -> RightsRequest | None:
    return session.scalars(
        select(RightsRequest).where(RightsRequest.subject_id == subject_id, RightsRequest.id == request_id)
    ).one_or_none()


def page(session: Session, subject_id: str, after: str | None, limit: int) -> list[RightsRequest]:
    stmt = select(RightsRequest).where(RightsRequest.subject_id == subject_id)
    return keyset_page(session, stmt, RightsRequest.id, after, limit)


def all_samples(session: Session, subject_id: str) -> list[Sample]:
    return list(session.scalars(select(Sample).where(Sample.subject_id == subject_id).order_by(Sample.id)))


def all_consents(session: Session, subject_id: str) -> list[Consent]:
    return list(session.scalars(select(Consent).where(Consent.subject_id == subject_id).order_by(Consent.id)))


def all_revocations(session: Session, subject_id: str) -> list[Revocation]:
    return list(
        session.scalars(select(Revocation).where(Revocation.subject_id == subject_id).order_by(Revocation.id))
    )


def all_requests(session: Session, subject_id: str) -> list[RightsRequest]:
    return list(
        session.scalars(
            select(RightsRequest).where(RightsRequest.subject_id == subject_id).order_by(RightsRequest.id)
        )
    )


def shred_sealed_columns(session: Session, subject_id: str) -> None:
    """Drop the ciphertexts too: the key is gone already, this only frees the space."""
    from sqlalchemy import update

    session.execute(update(Sample).where(Sample.subject_id == subject_id).values(attributes_sealed=None))
    session.execute(update(Revocation).where(Revocation.subject_id == subject_id).values(reason_sealed=None))
