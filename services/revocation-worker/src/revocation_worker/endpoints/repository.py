from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from revocation_worker.endpoints.models import Endpoint


def get_own(session: Session, licensee_id: str, endpoint_id: str, *, lock: bool = False) -> Endpoint | None:
    stmt = select(Endpoint).where(Endpoint.licensee_id == licensee_id, Endpoint.id == endpoint_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def get(session: Session, endpoint_id: str) -> Endpoint | None:
    return session.get(Endpoint, endpoint_id)


def page(
    session: Session,
    licensee_id: str | None,
    status: str | None,
    after: str | None,
    limit: int,
    failing: bool = False,
) -> list[Endpoint]:
    stmt = select(Endpoint)
    if licensee_id is not None:
        stmt = stmt.where(Endpoint.licensee_id == licensee_id)
    if status:
        stmt = stmt.where(Endpoint.status == status)
    if failing:
        stmt = stmt.where((Endpoint.failing_since.is_not(None)) | (Endpoint.status == "disabled"))
    if after:
        stmt = stmt.where(Endpoint.id > after)
    return list(session.scalars(stmt.order_by(Endpoint.id).limit(limit)))


def active_for(session: Session, licensee_id: str) -> list[Endpoint]:
    return list(
        session.scalars(
            select(Endpoint).where(Endpoint.licensee_id == licensee_id, Endpoint.status == "active")
        )
    )
