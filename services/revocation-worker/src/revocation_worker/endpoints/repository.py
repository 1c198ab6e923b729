from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, or_, select, text, union_all
from sqlalchemy.orm import Session

from rescind_common.db import keyset_page
from revocation_worker.endpoints.models import Endpoint


def get_own(session: Session, licensee_id: str, endpoint_id: str, *, lock: bool = False) -> Endpoint | None:
    stmt = select(Endpoint).where(Endpoint.licensee_id == licensee_id, Endpoint.id == endpoint_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def count_for(session: Session, licensee_id: str, *, lock: bool = False) -> int:
    """The licensee's endpoints, active and disabled (a deleted one is gone). `lock`: first take the
    licensee's endpoint lock for the transaction (PostgreSQL), so that two registrations racing
    each other cannot both pass the cap; SQLite serialises writers on its own."""
    if lock and session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"endpoints:{licensee_id}"},
        )
    return int(
        session.scalar(select(func.count()).select_from(Endpoint).where(Endpoint.licensee_id == licensee_id))
        or 0
    )


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
    return keyset_page(session, stmt, Endpoint.id, after, limit)


def active_ids_for_many(session: Session, licensee_ids: Collection[str]) -> dict[str, list[str]]:
    """Active endpoint ids per licensee, for many licensees in one query per 900 licensees."""
    out: dict[str, list[str]] = {}
    ids = sorted(set(licensee_ids))
    for i in range(0, len(ids), 900):
        rows = session.execute(
            select(Endpoint.licensee_id, Endpoint.id)
            .where(Endpoint.licensee_id.in_(ids[i : i + 900]), Endpoint.status == "active")
            .order_by(Endpoint.licensee_id, Endpoint.id)
        )
        for licensee_id, endpoint_id in rows:
            out.setdefault(licensee_id, []).append(endpoint_id)
    return out


def active_for(session: Session, licensee_id: str) -> list[Endpoint]:
    return list(
        session.scalars(
            select(Endpoint).where(Endpoint.licensee_id == licensee_id, Endpoint.status == "active")
        )
    )


def to_reseal(session: Session, current: str, after: str, limit: int) -> list[Endpoint]:
    """The next `limit` endpoints past `after` (by id) with a secret not sealed under `current` or a
    previous secret at all (it may have expired), row-locked: a secret rotation waits for the batch."""
    stmt = (
        select(Endpoint)
        .where(
            or_(
                Endpoint.secret_key_id != current,
                Endpoint.previous_secret_sealed.is_not(None),
            ),
            Endpoint.id > after,
        )
        .order_by(Endpoint.id)
        .limit(limit)
        .with_for_update()
    )
    return list(session.scalars(stmt))


def secret_key_counts(session: Session) -> dict[str, int]:
    """Sealed secrets (current and previous) per key id."""
    ids = union_all(
        select(Endpoint.secret_key_id.label("key_id")),
        select(Endpoint.previous_secret_key_id.label("key_id")).where(
            Endpoint.previous_secret_sealed.is_not(None)
        ),
    ).subquery()
    rows = session.execute(select(ids.c.key_id, func.count()).group_by(ids.c.key_id))
    return {str(key_id or "v1"): int(n) for key_id, n in rows}
