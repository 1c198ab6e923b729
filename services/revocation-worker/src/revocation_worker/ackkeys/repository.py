"""Ack keys: every query."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rescind_common.db import keyset_page
from revocation_worker.ackkeys.models import AckKey


def get_own(session: Session, licensee_id: str, key_id: str) -> AckKey | None:
    return session.scalars(
        select(AckKey).where(AckKey.licensee_id == licensee_id, AckKey.id == key_id)
    ).one_or_none()


def by_kid(session: Session, licensee_id: str, kid: str) -> AckKey | None:
    return session.scalars(
        select(AckKey).where(AckKey.licensee_id == licensee_id, AckKey.kid == kid)
    ).one_or_none()


def all_of(session: Session, licensee_id: str) -> list[AckKey]:
    return list(session.scalars(select(AckKey).where(AckKey.licensee_id == licensee_id).order_by(AckKey.id)))


def count(session: Session, licensee_id: str) -> int:
    return int(
        session.scalar(select(func.count()).select_from(AckKey).where(AckKey.licensee_id == licensee_id)) or 0
    )


def page(session: Session, licensee_id: str, after: str | None, limit: int) -> list[AckKey]:
    return keyset_page(
        session, select(AckKey).where(AckKey.licensee_id == licensee_id), AckKey.id, after, limit
    )


def delete(session: Session, key: AckKey) -> None:
    session.delete(key)
