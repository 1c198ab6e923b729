"""Small SQL helpers the repositories share: set membership for long id lists and insert-or-ignore,
on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, any_, bindparam, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

# SQLite allows 32,766 bound parameters per statement: IN lists of 900 (two at most) stay far below.
SQLITE_CHUNK = 900
# PostgreSQL takes one array parameter (`= ANY(:ids)`): a single plan whatever the length, ~10x
# faster than long IN lists; chunks only bound the memory of one round trip.
POSTGRES_CHUNK = 10_000
INSERT_BATCH = 5000


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def id_chunks(session: Session, ids: Sequence[str]) -> Iterable[Sequence[str]]:
    return chunks(ids, POSTGRES_CHUNK if is_postgres(session) else SQLITE_CHUNK)


def is_postgres_conn(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def chunk_size(postgres: bool) -> int:
    return POSTGRES_CHUNK if postgres else SQLITE_CHUNK


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
    for part in chunks(rows, INSERT_BATCH):
        session.execute(stmt, list(part))
