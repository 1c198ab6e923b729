"""Small SQL helpers the repositories share: set membership for long id lists and insert-or-ignore,
on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, any_, bindparam, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rescind_common.bulk import ANY_ARRAY_CHUNK, EXECUTEMANY_CHUNK, IN_LIST_CHUNK, chunks

# PostgreSQL takes one array parameter (`= ANY(:ids)`): a single plan whatever the length, faster
# than long IN lists; SQLite takes IN lists under its bound-parameter limit.


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def id_chunks(session: Session, ids: Sequence[str]) -> Iterable[Sequence[str]]:
    return chunks(ids, ANY_ARRAY_CHUNK if is_postgres(session) else IN_LIST_CHUNK)


def is_postgres_conn(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def chunk_size(postgres: bool) -> int:
    return ANY_ARRAY_CHUNK if postgres else IN_LIST_CHUNK


def member(postgres: bool, column: Any, name: str) -> ColumnElement[bool]:
    """`column` among the ids bound to `name` at execution time: unlike `among`, the statement does
    not hold the ids, so it can be built once and its compiled form reused (give it a chunk)."""
    if postgres:
        return column == any_(bindparam(name, type_=postgresql.ARRAY(String)))
    return column.in_(bindparam(name, expanding=True))


def among(session: Session, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
    """`column IN ids` (SQLite) or `column = ANY(:ids)` (PostgreSQL); give it one of `id_chunks`."""
    if is_postgres(session):
        return column == any_(literal(list(ids), postgresql.ARRAY(String)))
    return column.in_(ids)


def insert_ignoring_duplicates(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], index_elements: list[str]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, executemany in batches."""
    if not rows:
        return
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    stmt = insert(model).on_conflict_do_nothing(index_elements=index_elements)
    for part in chunks(rows, EXECUTEMANY_CHUNK):
        session.execute(stmt, list(part))
