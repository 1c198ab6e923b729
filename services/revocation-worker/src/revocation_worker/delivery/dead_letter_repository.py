"""Dead deliveries: dead-lettering the pending deliveries of disabled endpoints, and reading them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import Table, func, or_, select, update
from sqlalchemy.orm import Session

from rescind_common.db import keyset_page
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.notices.models import Delivery


def pending_to_disabled(
    session: Session, now: dt.datetime, endpoint_ids: Sequence[str] | None, limit: int
) -> list[tuple[int, str, str]]:
    """(delivery id, notice id, endpoint id) of pending deliveries to disabled endpoints that no
    attempt holds (no live lease), by delivery id. The loop never claims them."""
    disabled = select(Endpoint.id).where(Endpoint.status != "active")
    if endpoint_ids is not None:
        disabled = disabled.where(Endpoint.id.in_(sorted(set(endpoint_ids))))
    rows = session.execute(
        select(Delivery.id, Delivery.notice_id, Delivery.endpoint_id)
        .where(
            Delivery.status == "pending",
            Delivery.endpoint_id.in_(disabled.scalar_subquery()),
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
        )
        .order_by(Delivery.id)
        .limit(limit)
    )
    return [(int(i), str(n), str(e)) for i, n, e in rows]


def share_disabled_skip_locked(session: Session, ids: Iterable[str]) -> set[str]:
    """Those of these endpoints that are disabled, share-locked (enabling one waits for us, then
    sees what we did); an endpoint someone holds is left for later."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    stmt = (
        select(Endpoint.id)
        .where(Endpoint.id.in_(wanted), Endpoint.status != "active")
        .order_by(Endpoint.id)
        .with_for_update(read=True, skip_locked=True)
    )
    return {str(i) for i in session.scalars(stmt)}


def dead_letter_pending(
    session: Session, ids: Sequence[int], now: dt.datetime, error: str
) -> list[tuple[int, str]]:
    """Dead-letter these deliveries if they are still pending and unleased (rows someone holds
    are skipped). Returns (id, notice id) of those dead-lettered."""
    if not ids:
        return []
    table = cast(Table, Delivery.__table__)
    d = table.c
    free = (
        select(d.id)
        .where(d.id.in_(list(ids)), d.status == "pending", or_(d.lease_until.is_(None), d.lease_until < now))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = session.execute(
        update(table)
        .where(d.id.in_(free))
        .values(status="dead", lease_until=None, lease_owner=None, last_error=error[:500])
        .returning(d.id, d.notice_id)
    )
    return [(int(i), str(n)) for i, n in rows]


def dead_deliveries(
    session: Session, licensee_id: str | None, after: int | None, limit: int
) -> list[Delivery]:
    stmt = select(Delivery).where(Delivery.status == "dead")
    if licensee_id:
        stmt = stmt.where(Delivery.licensee_id == licensee_id)
    return keyset_page(session, stmt, Delivery.id, after, limit)


def count_dead(session: Session, licensee_id: str | None = None) -> int:
    stmt = select(func.count()).select_from(Delivery).where(Delivery.status == "dead")
    if licensee_id:
        stmt = stmt.where(Delivery.licensee_id == licensee_id)
    return int(session.scalar(stmt) or 0)
