from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from consent_api.audit.models import AuditEntry
from consent_api.subjects.models import Subject
from rescind_common import bulk
from rescind_common.audit_chain import Link, chain_hash


def entry_insert(values: dict[str, Any]) -> bulk.Write:
    # Core: no ORM object to track and flush.
    return bulk.insert_rows(AuditEntry, [values])


def head_update(subject_id: str, seq: int, head: str) -> bulk.Write:
    return bulk.update_rows(Subject, [{"id": subject_id, "audit_seq": seq, "audit_head": head}])


def entries_for(session: Session, subject_id: str, after_seq: int = 0, limit: int = 500) -> list[AuditEntry]:
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.subject_id == subject_id, AuditEntry.seq > after_seq)
        .order_by(AuditEntry.seq)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def iter_all(session: Session, batch: int = 2000) -> Iterator[AuditEntry]:
    """Every entry, ordered by subject then seq (so each chain is walked in order)."""
    last: tuple[str, int] = ("", 0)
    while True:
        stmt = (
            select(AuditEntry)
            .where(
                (AuditEntry.subject_id > last[0])
                | ((AuditEntry.subject_id == last[0]) & (AuditEntry.seq > last[1]))
            )
            .order_by(AuditEntry.subject_id, AuditEntry.seq)
            .limit(batch)
        )
        rows = list(session.scalars(stmt))
        if not rows:
            return
        yield from rows
        last = (rows[-1].subject_id, rows[-1].seq)


def _entry_out(e: AuditEntry) -> dict[str, Any]:
    from consent_api.audit.service import entry_body

    body = entry_body(e)
    return {
        "chain_id": e.subject_id,
        "subject_id": e.subject_id,
        "seq": e.seq,
        "at": body["at"],
        "actor": e.actor,
        "action": e.action,
        "entity_id": e.entity_id,
        "data": e.data,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
        "body": body,
    }


class SubjectChains:
    """consent-api's chains as `rescind_common.audit_api.ChainSource`: one per subject, entries in
    audit_log, heads on the subject rows."""

    def links(self, conn: Connection) -> Iterator[Link]:
        from consent_api.audit.service import entry_body

        session = Session(bind=conn)
        for e in iter_all(session):
            yield Link(e.subject_id, e.seq, e.prev_hash, e.hash, chain_hash(e.prev_hash, entry_body(e)))

    def heads(self, conn: Connection) -> dict[str, tuple[int, str]]:
        s = Subject.__table__.c
        return {i: (q, h) for i, q, h in conn.execute(select(s.id, s.audit_seq, s.audit_head))}

    def entries_page(
        self, conn: Connection, chain_id: str | None, after: tuple[str, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        stmt = select(AuditEntry).order_by(AuditEntry.subject_id, AuditEntry.seq).limit(limit)
        if chain_id is not None:
            stmt = stmt.where(AuditEntry.subject_id == chain_id)
        if after is not None:
            stmt = stmt.where(
                (AuditEntry.subject_id > after[0])
                | ((AuditEntry.subject_id == after[0]) & (AuditEntry.seq > after[1]))
            )
        return [_entry_out(e) for e in Session(bind=conn).scalars(stmt)]

    def heads_page(self, conn: Connection, after: str | None, limit: int) -> list[tuple[str, int, str]]:
        s = Subject.__table__.c
        stmt = select(s.id, s.audit_seq, s.audit_head).order_by(s.id).limit(limit)
        if after is not None:
            stmt = stmt.where(s.id > after)
        return [(i, q, h) for i, q, h in conn.execute(stmt)]
