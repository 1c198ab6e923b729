from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import case, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from consent_api.notices.models import RevocationNotice, RevocationResolution
from rescind_common.bulk import IN_LIST_CHUNK, chunks


def for_revocations(session: Session, revocation_ids: Sequence[str]) -> dict[str, list[RevocationNotice]]:
    out: dict[str, list[RevocationNotice]] = {r: [] for r in revocation_ids}
    if not revocation_ids:
        return out
    rows = session.scalars(
        select(RevocationNotice)
        .where(RevocationNotice.revocation_id.in_(list(revocation_ids)))
        .order_by(RevocationNotice.revocation_id, RevocationNotice.licensee_id)
    )
    for n in rows:
        out[n.revocation_id].append(n)
    return out


def resolutions(session: Session, revocation_ids: Sequence[str]) -> dict[str, RevocationResolution]:
    if not revocation_ids:
        return {}
    rows = session.scalars(
        select(RevocationResolution).where(RevocationResolution.revocation_id.in_(list(revocation_ids)))
    )
    return {r.revocation_id: r for r in rows}


NOTICES = RevocationNotice.__table__
RESOLUTIONS = RevocationResolution.__table__


def lock_notices(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The current rows (status and details) of the notices among `keys` (sorted) that have one,
    locked in key order so that two consumers on overlapping notices (a rebalance) cannot deadlock."""
    pk = tuple_(NOTICES.c.revocation_id, NOTICES.c.licensee_id)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for part in chunks(keys, IN_LIST_CHUNK):
        stmt = (
            select(NOTICES)
            .where(pk.in_(part))
            .order_by(NOTICES.c.revocation_id, NOTICES.c.licensee_id)
            .with_for_update()
        )
        for row in session.execute(stmt).mappings():
            out[(row["revocation_id"], row["licensee_id"])] = dict(row)
    return out


def _insert(session: Session, table: Any) -> Any:
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)


def _rank(rank: Mapping[str, int], status: Any) -> Any:
    return case(dict(rank), value=status, else_=-1)


def _upsert(session: Session, rank: Mapping[str, int], details: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE, with the rank rule in SQL too: rows were locked and folded
    from their current status, so it always holds, except for a row another transaction created
    after the SELECT, which a status from this batch then never moves back. The details were folded
    from the locked row in Python and are written as they are."""
    stmt = _insert(session, NOTICES)
    existing, new = NOTICES.c.status, stmt.excluded.status
    moves = ((new == "delivered") & (existing == "failed")) | (_rank(rank, new) >= _rank(rank, existing))
    set_: dict[str, Any] = {
        "status": case((moves, new), else_=existing),
        "updated_at": stmt.excluded.updated_at,
    }
    set_.update({name: stmt.excluded[name] for name in details})
    return stmt.on_conflict_do_update(
        index_elements=[NOTICES.c.revocation_id, NOTICES.c.licensee_id], set_=set_
    )


def add_resolutions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert resolutions (one executemany of a cached statement); one already there stays."""
    session.execute(_insert(session, RESOLUTIONS).on_conflict_do_nothing(), list(rows))


def upsert_notices(
    session: Session, rows: Sequence[dict[str, Any]], rank: Mapping[str, int], details: Sequence[str]
) -> None:
    """Write notices: new rows inserted, existing ones updated (their status where `rank` allows).
    Executemany of one cached statement: a multi-row VALUES would be compiled anew each time."""
    session.execute(_upsert(session, rank, details), list(rows))
