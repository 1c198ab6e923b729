"""The delivery loop's own queries: batch loads for claiming and recording, the next due time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from revocation_worker.endpoints.models import Endpoint
from revocation_worker.notices.models import Delivery, DeliveryAttempt, Notice


def endpoints_by_id(session: Session, ids: Iterable[str], *, lock: bool = False) -> dict[str, Endpoint]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    # Ordered by id: every recorder locks rows in the same order.
    stmt = select(Endpoint).where(Endpoint.id.in_(wanted)).order_by(Endpoint.id)
    if lock:
        stmt = stmt.with_for_update()
    return {e.id: e for e in session.scalars(stmt)}


def notices_by_id(session: Session, ids: Iterable[str], *, lock: bool = False) -> dict[str, Notice]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = select(Notice).where(Notice.id.in_(wanted)).order_by(Notice.id)
    if lock:
        stmt = stmt.with_for_update()
    return {n.id: n for n in session.scalars(stmt)}


def lock_deliveries(session: Session, ids: Iterable[int]) -> dict[int, Delivery]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = select(Delivery).where(Delivery.id.in_(wanted)).order_by(Delivery.id).with_for_update()
    return {d.id: d for d in session.scalars(stmt)}


def cancel(session: Session, ids: Sequence[int]) -> None:
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(ids)))
            .values(status="cancelled", lease_until=None, lease_owner=None)
            .execution_options(synchronize_session=False)
        )


def release(session: Session, ids: Sequence[int]) -> None:
    """Give leases back (nothing was sent): the deliveries are due again at once."""
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(ids)), Delivery.status == "pending")
            .values(lease_until=None, lease_owner=None)
            .execution_options(synchronize_session=False)
        )


def add_attempts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One multi-row INSERT for every attempt of a recording pass."""
    if rows:
        session.execute(insert(DeliveryAttempt), list(rows))


def next_due_at(session: Session, after: dt.datetime) -> dt.datetime | None:
    """When the earliest pending delivery not yet due becomes due (one probe of the
    (status, next_attempt_at) index)."""
    return session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status == "pending", Delivery.next_attempt_at > after
        )
    )
