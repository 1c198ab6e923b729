from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, insert, select
from sqlalchemy.orm import Session

from consent_api.consents.models import ConsentSample
from consent_api.revocations.models import Revocation, RevocationItem
from rescind_common import bulk
from rescind_common.db import keyset_page

_LINKS = cast(Table, ConsentSample.__table__)
# The items are the consent's links to the withdrawn samples (one statement, whatever their number).
_ITEMS_INSERT = insert(cast(Table, RevocationItem.__table__)).from_select(
    ["revocation_id", "consent_id", "sample_id"],
    select(bindparam("items_revocation_id", type_=String(40)), _LINKS.c.consent_id, _LINKS.c.sample_id).where(
        _LINKS.c.consent_id == bindparam("items_consent_id"),
        _LINKS.c.sample_id.in_(bindparam("items_sample_ids", expanding=True)),
    ),
)


def row_insert(values: dict[str, Any]) -> bulk.Write:
    """The revocation row as a write for `rescind_common.bulk.execute`."""
    return bulk.insert_rows(Revocation, [values])


def items_insert(revocation_id: str, consent_id: str, sample_ids: Sequence[str]) -> bulk.Write:
    """Items for these (at most IN_LIST_CHUNK) samples withdrawn from the consent, for
    `rescind_common.bulk.execute`."""
    return bulk.statement(
        _ITEMS_INSERT,
        {
            "items_revocation_id": revocation_id,
            "items_consent_id": consent_id,
            "items_sample_ids": list(sample_ids),
        },
    )


def get(session: Session, subject_id: str, revocation_id: str) -> Revocation | None:
    return session.scalars(
        select(Revocation).where(Revocation.subject_id == subject_id, Revocation.id == revocation_id)
    ).one_or_none()


def by_ids(session: Session, revocation_ids: Sequence[str]) -> list[Revocation]:
    if not revocation_ids:
        return []
    return list(session.scalars(select(Revocation).where(Revocation.id.in_(list(revocation_ids)))))


def subject_ids(session: Session, revocation_ids: Sequence[str]) -> dict[str, str]:
    """Whose each revocation is (those that exist)."""
    out: dict[str, str] = {}
    for part in bulk.chunks(sorted(set(revocation_ids))):
        rows = session.execute(
            select(Revocation.id, Revocation.subject_id).where(Revocation.id.in_(list(part)))
        )
        out.update((r, s) for r, s in rows)
    return out


def page(session: Session, subject_id: str, after: str | None, limit: int) -> list[Revocation]:
    stmt = select(Revocation).where(Revocation.subject_id == subject_id)
    return keyset_page(session, stmt, Revocation.id, after, limit)


def items(session: Session, revocation_id: str) -> list[tuple[str, str]]:
    rows = session.execute(
        select(RevocationItem.consent_id, RevocationItem.sample_id)
        .where(RevocationItem.revocation_id == revocation_id)
        .order_by(RevocationItem.consent_id, RevocationItem.sample_id)
    )
    return [(c, s) for c, s in rows]
