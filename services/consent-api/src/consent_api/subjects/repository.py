from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from consent_api.subjects.models import KeyCheck, Subject, SubjectKey
from rescind_common.bulk import IN_LIST_CHUNK, chunks
from rescind_common.db import utcnow
from rescind_common.ids import new_id


def by_sub_hash(session: Session, sub_hash: str, *, lock: bool = False) -> Subject | None:
    stmt = select(Subject).where(Subject.sub_hash == sub_hash)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def by_id(session: Session, subject_id: str, *, lock: bool = False) -> Subject | None:
    stmt = select(Subject).where(Subject.id == subject_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def lock_by_ids(session: Session, subject_ids: list[str]) -> dict[str, Subject]:
    """These subjects (those that exist), row-locked in id order (as every batch locks them)."""
    out: dict[str, Subject] = {}
    for part in chunks(sorted(set(subject_ids)), IN_LIST_CHUNK):
        stmt = select(Subject).where(Subject.id.in_(list(part))).order_by(Subject.id).with_for_update()
        out.update((s.id, s) for s in session.scalars(stmt))
    return out


def insert_if_missing(session: Session, sub_hash: str) -> None:
    values = {
        "id": new_id("sub"),
        "sub_hash": sub_hash,
        "created_at": utcnow(),
        "audit_seq": 0,
        "audit_head": "0" * 64,
    }
    dialect = session.get_bind().dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Subject)
    session.execute(ins.values(**values).on_conflict_do_nothing(index_elements=["sub_hash"]))


def get_key(session: Session, subject_id: str) -> SubjectKey | None:
    return session.get(SubjectKey, subject_id)


def add_key(session: Session, subject_id: str, key_id: str, wrapped: bytes) -> SubjectKey:
    key = SubjectKey(subject_id=subject_id, wrapped_key=wrapped, key_id=key_id, created_at=utcnow())
    session.add(key)
    session.flush()
    return key


def delete_key(session: Session, subject_id: str) -> int:
    result = session.execute(delete(SubjectKey).where(SubjectKey.subject_id == subject_id))
    return int(getattr(result, "rowcount", 0) or 0)


def keys_to_rewrap(session: Session, current: str, after: str, limit: int) -> list[SubjectKey]:
    """The next `limit` keys past `after` (by subject id) not wrapped under `current`, row-locked so
    that an erasure or a second rotation waits for this batch."""
    stmt = (
        select(SubjectKey)
        .where(SubjectKey.key_id != current, SubjectKey.subject_id > after)
        .order_by(SubjectKey.subject_id)
        .limit(limit)
        .with_for_update()
    )
    return list(session.scalars(stmt))


def key_counts(session: Session) -> dict[str, int]:
    """Subject keys per master key id."""
    rows = session.execute(select(SubjectKey.key_id, func.count()).group_by(SubjectKey.key_id))
    return {key_id: int(n) for key_id, n in rows}


def key_check(session: Session, name: str) -> str | None:
    return session.scalar(select(KeyCheck.value).where(KeyCheck.name == name))


def add_key_check(session: Session, name: str, value: str) -> None:
    """Record it unless another process did first (the caller reads back which one holds)."""
    dialect = session.get_bind().dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(KeyCheck)
    row = {"name": name, "value": value, "created_at": utcnow()}
    session.execute(ins.values(**row).on_conflict_do_nothing(index_elements=["name"]))


def any_subject(session: Session) -> bool:
    return session.scalar(select(Subject.id).limit(1)) is not None
