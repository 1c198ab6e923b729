"""Licensee policies: every query."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rescind_common.bulk import chunks
from revocation_worker.policy.models import LicenseePolicy


def get(session: Session, licensee_id: str) -> LicenseePolicy | None:
    return session.get(LicenseePolicy, licensee_id)


def remove(session: Session, licensee_id: str) -> None:
    session.execute(delete(LicenseePolicy).where(LicenseePolicy.licensee_id == licensee_id))


def of_many(session: Session, licensee_ids: Iterable[str]) -> dict[str, LicenseePolicy]:
    """The overrides of these licensees (those that have one)."""
    out: dict[str, LicenseePolicy] = {}
    for part in chunks(sorted(set(licensee_ids))):
        for p in session.scalars(select(LicenseePolicy).where(LicenseePolicy.licensee_id.in_(list(part)))):
            out[p.licensee_id] = p
    return out
