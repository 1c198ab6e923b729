"""The intake's queries: the handler's (a batch's revocations and parts, read and written a batch at
a time), the resolver's (claiming due revocations, their parts, resolving them) and the rechecks'."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Row, Table, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rescind_common.bulk import chunks
from rescind_common.db import UTCDateTime
from revocation_worker.intake.models import Revocation, RevocationPart, RevocationRecheck

if TYPE_CHECKING:
    from revocation_worker.intake.rules import PartLike

_REVOCATIONS = cast(Table, Revocation.__table__)
_PARTS = cast(Table, RevocationPart.__table__)
_RECHECKS = cast(Table, RevocationRecheck.__table__)
# Core INSERTs on the session's connection (the plain rows need none of the ORM's machinery).
_INSERT_REVOCATIONS = insert(_REVOCATIONS)
_INSERT_PARTS = insert(_PARTS)


_LOCK_REVOCATIONS = (
    select(_REVOCATIONS.c.id, _REVOCATIONS.c.state, _REVOCATIONS.c.consent_count)
    .where(_REVOCATIONS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_REVOCATIONS.c.id)
    .with_for_update()
)
_PART_KEYS = select(
    _PARTS.c.revocation_id, _PARTS.c.consent_id, _PARTS.c.chunk_index, _PARTS.c.chunk_count
).where(_PARTS.c.revocation_id.in_(bindparam("ids", expanding=True)))


def lock_revocations(session: Session, ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """(state, consent_count) of those of these revocations that exist, row-locked in id order."""
    found: dict[str, tuple[str, int]] = {}
    wanted = sorted(set(ids))
    conn = session.connection()
    for part in chunks(wanted):
        for rid, state, count in conn.execute(_LOCK_REVOCATIONS, {"ids": list(part)}):
            found[str(rid)] = (str(state), int(count))
    return found


def part_keys(session: Session, revocation_ids: Sequence[str]) -> dict[tuple[str, str, int], int]:
    """Every stored part of these revocations: (revocation, consent, chunk index) -> chunk_count."""
    found: dict[tuple[str, str, int], int] = {}
    wanted = sorted(set(revocation_ids))
    conn = session.connection()
    for part in chunks(wanted):
        rows = conn.execute(_PART_KEYS, {"ids": list(part)})
        for rid, consent_id, chunk_index, chunk_count in rows:
            found[(str(rid), str(consent_id), int(chunk_index))] = int(chunk_count)
    return found


def insert_revocations(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(_INSERT_REVOCATIONS, list(rows))


def insert_parts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(_INSERT_PARTS, list(rows))


def mark_ready(session: Session, ids: Sequence[str], now: dt.datetime) -> None:
    """Revocations still collecting whose every part is now in: ready for the resolver."""
    c = _REVOCATIONS.c
    for part in chunks(ids):
        session.connection().execute(
            update(_REVOCATIONS)
            .where(c.id.in_(list(part)), c.state == "collecting")
            .values(state="ready", next_resolve_at=now)
        )


# -- resolving (ready revocations -> notices) --------------------------------------------------------

# The claim's statements, built once (Core, bound per call): the resolver claims on every pass.
_DUE = (
    select(_REVOCATIONS.c.id)
    .where(
        _REVOCATIONS.c.state == "ready",
        _REVOCATIONS.c.next_resolve_at <= bindparam("now", type_=UTCDateTime()),
    )
    .order_by(_REVOCATIONS.c.next_resolve_at)
    .limit(bindparam("limit"))
)
_DUE_SKIP_LOCKED = _DUE.with_for_update(skip_locked=True)
_HIDE = (
    update(_REVOCATIONS)
    .where(_REVOCATIONS.c.id.in_(bindparam("ids", expanding=True)))
    .values(next_resolve_at=bindparam("until", type_=UTCDateTime()))
)


def due(session: Session, now: dt.datetime, limit: int, *, skip_locked: bool = False) -> list[str]:
    stmt = _DUE_SKIP_LOCKED if skip_locked else _DUE
    return [str(i) for i in session.connection().execute(stmt, {"now": now, "limit": limit}).scalars()]


def claim(session: Session, now: dt.datetime, limit: int, lease: dt.timedelta) -> list[str]:
    """Take up to `limit` due revocations for `lease`, in the caller's transaction.

    On PostgreSQL rows another resolver is claiming right now are skipped (SKIP LOCKED), and
    moving next_resolve_at past the lease hides the claimed rows from every other resolver until
    it ends (a crashed resolver's claims come back then). On SQLite, BEGIN IMMEDIATE serialises
    claims. The lease only saves duplicate work: notices are made under a row lock that re-checks
    the state, so a revocation whose lease ran out is still never resolved twice."""
    ids = due(session, now, limit, skip_locked=True)
    if ids:
        session.connection().execute(_HIDE, {"ids": ids, "until": now + lease})
    return ids


_PARTS_OF = select(
    _PARTS.c.revocation_id,
    _PARTS.c.consent_id,
    _PARTS.c.sample_ids,
    _PARTS.c.purposes,
    _PARTS.c.only_licensee_id,
).where(_PARTS.c.revocation_id.in_(bindparam("ids", expanding=True)))


def parts_of_many(session: Session, revocation_ids: Sequence[str]) -> dict[str, list[PartLike]]:
    """Every revocation's parts as plain rows (no ORM objects), one query per IN list of revocations
    (none for a revocation without)."""
    parts: dict[str, list[PartLike]] = {rid: [] for rid in revocation_ids}
    ids = sorted(set(revocation_ids))
    conn = session.connection()
    for chunk in chunks(ids):
        for part in conn.execute(_PARTS_OF, {"ids": chunk}):
            parts[part.revocation_id].append(part)
    return parts


# Resolve the ready ones of these revocations (their rows locked in id order, so that resolvers
# never deadlock) and return what their notices need, in one statement: a revocation no longer
# ready was resolved by another resolver whose lease had outlived ours. On SQLite (no FOR UPDATE)
# BEGIN IMMEDIATE serialises writers instead.
_RESOLVE = (
    update(_REVOCATIONS)
    .where(
        _REVOCATIONS.c.id.in_(
            select(_REVOCATIONS.c.id)
            .where(_REVOCATIONS.c.id.in_(bindparam("ids", expanding=True)), _REVOCATIONS.c.state == "ready")
            .order_by(_REVOCATIONS.c.id)
            .with_for_update()
            .scalar_subquery()
        )
    )
    .values(state="resolved", resolved_at=bindparam("now"))
    .returning(
        _REVOCATIONS.c.id, _REVOCATIONS.c.subject_id, _REVOCATIONS.c.occurred_at, _REVOCATIONS.c.trigger
    )
)


def resolve(session: Session, ids: Sequence[str], now: dt.datetime) -> list[Row[Any]]:
    """Mark those of these revocations still ready resolved; returns them (id, subject_id,
    occurred_at, trigger) in id order."""
    rows = session.connection().execute(_RESOLVE, {"ids": sorted(ids), "now": now})
    return sorted(rows, key=lambda r: r.id)


def lock_ready(session: Session, ids: Sequence[str]) -> list[Revocation]:
    """Those of these revocations still ready, row-locked in id order (to back them off)."""
    return list(
        session.scalars(
            select(Revocation)
            .where(Revocation.id.in_(sorted(ids)), Revocation.state == "ready")
            .order_by(Revocation.id)
            .with_for_update()
        )
    )


# -- rechecks (a licensee the registry says lost samples to a revocation) ---------------------------

PAIRS = 400  # (revocation, licensee) pairs per statement: two parameters each on SQLite


def _insert_ignoring(session: Session, table: Table) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=["revocation_id", "licensee_id"])


def add_rechecks(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """New rechecks (every column); one already waiting stays as it is (its backoff too)."""
    if rows:
        session.connection().execute(_insert_ignoring(session, _RECHECKS), list(rows))


# Due rechecks of resolved revocations only: one of a revocation still collecting or ready waits
# (its resolution's own holders lookup comes after the license, which existed when the registry
# sent the event, so it finds it). Rows another resolver is claiming are skipped (PostgreSQL).
_DUE_RECHECKS = (
    select(_RECHECKS.c.revocation_id, _RECHECKS.c.licensee_id)
    .join(_REVOCATIONS, _REVOCATIONS.c.id == _RECHECKS.c.revocation_id)
    .where(
        _REVOCATIONS.c.state == "resolved",
        _RECHECKS.c.next_check_at <= bindparam("now", type_=UTCDateTime()),
    )
    .order_by(_RECHECKS.c.next_check_at)
    .limit(bindparam("limit"))
    .with_for_update(of=_RECHECKS, skip_locked=True)
)


def _pair_in(pairs: Sequence[tuple[str, str]]) -> Any:
    return tuple_(_RECHECKS.c.revocation_id, _RECHECKS.c.licensee_id).in_(list(pairs))


def claim_rechecks(
    session: Session, now: dt.datetime, limit: int, lease: dt.timedelta
) -> list[tuple[str, str]]:
    """Take up to `limit` due rechecks of resolved revocations for `lease` (next_check_at moved past
    it, so that other resolvers leave them alone until it ends): (revocation, licensee) pairs."""
    conn = session.connection()
    pairs = [(str(r), str(lic)) for r, lic in conn.execute(_DUE_RECHECKS, {"now": now, "limit": limit})]
    for i in range(0, len(pairs), PAIRS):
        hide = update(_RECHECKS).where(_pair_in(pairs[i : i + PAIRS])).values(next_check_at=now + lease)
        conn.execute(hide)
    return pairs


def drop_rechecks(session: Session, pairs: Sequence[tuple[str, str]]) -> None:
    """Done: the licensee has its notice for the revocation (or is no holder of what it withdrew)."""
    conn = session.connection()
    for i in range(0, len(pairs), PAIRS):
        conn.execute(delete(_RECHECKS).where(_pair_in(pairs[i : i + PAIRS])))


def lock_rechecks(session: Session, pairs: Sequence[tuple[str, str]]) -> list[Row[Any]]:
    """These rechecks (revocation_id, licensee_id, attempts), row-locked in key order."""
    out: list[Row[Any]] = []
    ordered = sorted(set(pairs))
    c = _RECHECKS.c
    for i in range(0, len(ordered), PAIRS):
        stmt = (
            select(c.revocation_id, c.licensee_id, c.attempts)
            .where(_pair_in(ordered[i : i + PAIRS]))
            .order_by(c.revocation_id, c.licensee_id)
            .with_for_update()
        )
        out.extend(session.connection().execute(stmt))
    return out


def back_off_rechecks(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """b_revocation_id, b_licensee_id, b_attempts, b_next_check_at, b_last_error per recheck."""
    if not rows:
        return
    c = _RECHECKS.c
    stmt = (
        update(_RECHECKS)
        .where(c.revocation_id == bindparam("b_revocation_id"), c.licensee_id == bindparam("b_licensee_id"))
        .values(
            attempts=bindparam("b_attempts"),
            next_check_at=bindparam("b_next_check_at", type_=UTCDateTime()),
            last_error=bindparam("b_last_error"),
        )
    )
    session.connection().execute(stmt, list(rows))


_LOCK_RESOLVED = (
    select(_REVOCATIONS.c.id, _REVOCATIONS.c.subject_id, _REVOCATIONS.c.occurred_at, _REVOCATIONS.c.trigger)
    .where(_REVOCATIONS.c.id.in_(bindparam("ids", expanding=True)), _REVOCATIONS.c.state == "resolved")
    .order_by(_REVOCATIONS.c.id)
    .with_for_update()
)


def lock_resolved(session: Session, ids: Sequence[str]) -> list[Row[Any]]:
    """Those of these revocations that are resolved (id, subject_id, occurred_at,
    trigger), row-locked in id
    order as every writer of notices locks them: a resolution in progress finishes first."""
    out: list[Row[Any]] = []
    wanted = sorted(set(ids))
    conn = session.connection()
    for part in chunks(wanted):
        out.extend(conn.execute(_LOCK_RESOLVED, {"ids": list(part)}))
    return out
