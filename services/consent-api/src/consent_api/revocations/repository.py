from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from consent_api.revocations.models import Revocation, RevocationItem
from consent_api.samples.repository import chunks


def insert_row(session: Session, values: dict[str, Any]) -> None:
    """One revocation row, straight to the database (no ORM object to track and flush)."""
    session.connection().execute(insert(Revocation), values)


def add_items(session: Session, revocation_id: str, consent_id: str, sample_ids: Sequence[str]) -> None:
    rows: list[dict[str, Any]] = [
        {"revocation_id": revocation_id, "consent_id": consent_id, "sample_id": s} for s in sample_ids
    ]
    conn = session.connection()
    for part in chunks(rows, 1000):
        conn.execute(insert(RevocationItem), list(part))


def get(session: Session, subject_id: str, revocation_id: str) -> Revocation | None:
    return session.scalars(
        select(Revocation).where(Revocation.subject_id == subject_id, Revocation.id == revocation_id)
    ).one_or_none()


def page(session: Session, subject_id: str, after: str | None, limit: int) -> list[Revocation]:
    stmt = select(Revocation).where(Revocation.subject_id == subject_id)
    if after:
        stmt = stmt.where(Revocation.id > after)
    return list(session.scalars(stmt.order_by(Revocation.id).limit(limit)))


def items(session: Session, revocation_id: str) -> list[tuple[str, str]]:
    rows = session.execute(
        select(RevocationItem.consent_id, RevocationItem.sample_id)
        .where(RevocationItem.revocation_id == revocation_id)
        .order_by(RevocationItem.consent_id, RevocationItem.sample_id)
    )
    return [(c, s) for c, s in rows]
