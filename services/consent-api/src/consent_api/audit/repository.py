from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_api.audit.models import AuditEntry
from consent_api.subjects.models import Subject
from rescind_common import bulk


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
