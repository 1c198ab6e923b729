from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.licensees.models import Licensee
from registry.sql import among, id_chunks
from rescind_common.db import keyset_page


def get(session: Session, licensee_id: str) -> Licensee | None:
    return session.get(Licensee, licensee_id)


def get_many(session: Session, ids: Iterable[str]) -> dict[str, Licensee]:
    out: dict[str, Licensee] = {}
    for part in id_chunks(session, sorted(set(ids))):
        for row in session.scalars(select(Licensee).where(among(session, Licensee.id, part))):
            out[row.id] = row
    return out


def page(session: Session, after: str | None, limit: int) -> list[Licensee]:
    stmt = select(Licensee)
    return keyset_page(session, stmt, Licensee.id, after, limit)
