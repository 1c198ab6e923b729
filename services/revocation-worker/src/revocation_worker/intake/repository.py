"""The intake handler's queries: a batch's revocations and parts, read and written a batch at a time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from revocation_worker.intake.models import Revocation, RevocationPart

CHUNK = 900  # ids per IN list (SQLite's bound-parameter limit, with room to spare)

_REVOCATIONS = cast(Table, Revocation.__table__)
_PARTS = cast(Table, RevocationPart.__table__)
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
    for i in range(0, len(wanted), CHUNK):
        for rid, state, count in conn.execute(_LOCK_REVOCATIONS, {"ids": wanted[i : i + CHUNK]}):
            found[str(rid)] = (str(state), int(count))
    return found


def part_keys(session: Session, revocation_ids: Sequence[str]) -> dict[tuple[str, str, int], int]:
    """Every stored part of these revocations: (revocation, consent, chunk index) -> chunk_count."""
    found: dict[tuple[str, str, int], int] = {}
    wanted = sorted(set(revocation_ids))
    conn = session.connection()
    for i in range(0, len(wanted), CHUNK):
        rows = conn.execute(_PART_KEYS, {"ids": wanted[i : i + CHUNK]})
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
    for i in range(0, len(ids), CHUNK):
        session.connection().execute(
            update(_REVOCATIONS)
            .where(c.id.in_(ids[i : i + CHUNK]), c.state == "collecting")
            .values(state="ready", next_resolve_at=now)
        )
