"""Multi-row writes built from the table definitions, folded into one round trip on PostgreSQL.

A write is a multi-row INSERT (`insert_rows`), a multi-row UPDATE keyed by primary key
(`update_rows`) or any prebuilt Core statement with its parameters (`statement`). `execute` runs a
list of them in the caller's transaction:

- on PostgreSQL, in one statement: each table's rows go as one array parameter per column
  (`unnest(...) WITH ORDINALITY`, inserted in order; a write of one row binds plain values, as a
  grant's writes are), and all writes but the last become
  data-modifying CTEs of the last. They see the same snapshot and none sees another's rows, so
  only fold writes that do not read each other (foreign keys are fine: they are checked at the
  end of the statement). The statement is built once per shape (tables, columns, order) and its
  compiled form cached by SQLAlchemy: a call costs the parameters only.
- elsewhere (SQLite), and when two writes touch the same table (the order of CTEs is unspecified),
  one executemany per write, in order: so order them as they must run one by one (a row before the
  rows that reference it).

Adjacent inserts into one table (the same columns) are merged into one write first, on every
dialect: a batch's events, say, are one write however many there are.

The column list comes from the table, so a column added to a model is written as soon as the rows
carry it: a row lacking a column that another row (or the table's Python-side default) supplies
gets that default, or fails loudly (`ValueError`) when there is none; a key that names no column
fails too. Columns no row carries and without a Python default are left to the database (server
default or NULL), as the ORM does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Delete,
    Insert,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine

T = TypeVar("T")

# Ids per `IN (...)` list: SQLite allows 32,766 bound parameters per statement; 900 leaves room
# for a statement with two such lists and other parameters.
IN_LIST_CHUNK = 900
# Ids per `= ANY(:ids)` array on PostgreSQL: one parameter whatever the length, one plan; the
# chunk only bounds the memory of one round trip.
ANY_ARRAY_CHUNK = 10_000
# Rows per executemany (SQLite, and PostgreSQL writes that are not folded): bounds memory only.
EXECUTEMANY_CHUNK = 1000


def chunks(items: Sequence[T], size: int = IN_LIST_CHUNK) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def table_of(model_or_table: Any) -> Table:
    table = getattr(model_or_table, "__table__", model_or_table)
    if not isinstance(table, Table):
        raise TypeError(f"not a table or mapped class: {model_or_table!r}")
    return table


@functools.cache
def _writable(table: Table) -> tuple[Column[Any], ...]:
    """Every column but an autoincrement key (the database numbers those)."""
    return tuple(c for c in table.columns if not (c.primary_key and c.autoincrement is True))


def _has_python_default(col: Column[Any]) -> bool:
    d = col.default
    return d is not None and bool(d.is_scalar or d.is_callable)


def _python_default(col: Column[Any]) -> tuple[bool, Any]:
    d = col.default
    if d is None or not _has_python_default(col):
        return False, None
    if d.is_scalar:
        return True, d.arg  # type: ignore[attr-defined]
    return True, d.arg(None)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Write:
    """One write of `execute`: `kind` is "insert", "update" or "statement"."""

    kind: str
    table: Table | None
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    stmt: Insert | Update | Delete | None = None
    params: dict[str, Any] | None = None


def insert_rows(model_or_table: Any, rows: Iterable[dict[str, Any]]) -> Write:
    """A multi-row INSERT of `rows` (column name -> value), in order; see the module's docstring
    for the columns written."""
    table = table_of(model_or_table)
    rows = list(rows)
    writable = _writable(table)
    names = {c.key for c in writable}
    given: set[str] = set()
    for row in rows:
        given.update(row)
    unknown = given - names
    if unknown:
        raise ValueError(f"{table.name}: no such column(s) to insert: {sorted(unknown)}")
    cols = [c for c in writable if c.key in given or _has_python_default(c)]
    out: list[dict[str, Any]] = []
    for row in rows:
        if len(row) == len(cols):
            out.append(row)
            continue
        full = dict(row)
        for c in cols:
            if c.key not in full:
                has, value = _python_default(c)
                if not has:
                    raise ValueError(f"{table.name}: a row has no {c.key!r} (and it has no default)")
                full[c.key] = value
        out.append(full)
    return Write("insert", table, tuple(c.key for c in cols), out)


def update_rows(model_or_table: Any, rows: Iterable[dict[str, Any]]) -> Write:
    """A multi-row UPDATE: each row names its primary key and the columns to set (every row the
    same columns), and sets them on the row with that key."""
    table = table_of(model_or_table)
    rows = list(rows)
    keys = [c.key for c in table.primary_key.columns]
    if not rows:
        return Write("update", table, tuple(keys), [])
    first = set(rows[0])
    unknown = first - set(table.columns.keys())
    if unknown:
        raise ValueError(f"{table.name}: no such column(s) to update: {sorted(unknown)}")
    missing = [k for k in keys if k not in first]
    if missing:
        raise ValueError(f"{table.name}: rows to update need their key {missing}")
    for row in rows:
        if set(row) != first:
            raise ValueError(f"{table.name}: rows differ in the columns they set")
    columns = tuple(keys) + tuple(sorted(first - set(keys)))
    return Write("update", table, columns, rows)


def statement(stmt: Insert | Update | Delete, params: dict[str, Any]) -> Write:
    """Any prebuilt Core statement (built once, its values bound parameters whose names no other
    write of the same `execute` uses) and this call's parameters."""
    return Write("statement", None, (), [], stmt, params)


# -- PostgreSQL: unnest, folded ---------------------------------------------------------------


def _impl(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    t = type_._variant_mapping.get("postgresql", type_)
    while isinstance(t, TypeDecorator):
        t = t.impl_instance
        t = t._variant_mapping.get("postgresql", t)
    return t


def _is_json(col: Column[Any]) -> bool:
    return isinstance(_impl(col.type), JSON)


def _array_param(col: Column[Any], name: str) -> Any:
    """`CAST(:name AS <type>[])` for one column's values. JSON values travel as their text (psycopg
    sends a list of str as an array that casts to jsonb[])."""
    if _is_json(col):
        return cast(bindparam(name, type_=postgresql.ARRAY(Text())), postgresql.ARRAY(_impl(col.type)))
    return cast(bindparam(name, type_=postgresql.ARRAY(col.type)), postgresql.ARRAY(col.type))


def _pg_statement(write: Write, prefix: str) -> Insert | Update:
    table = write.table
    assert table is not None
    if len(write.rows) == 1:
        # One row: plain bound values (arrays and unnest cost the server more for nothing).
        bound = {n: bindparam(f"{prefix}_{n}", type_=table.c[n].type) for n in write.columns}
        if write.kind == "insert":
            return insert(table).values(bound)
        keys = [c.key for c in table.primary_key.columns]
        return (
            update(table)
            .where(and_(*(table.c[k] == bound[k] for k in keys)))
            .values({n: bound[n] for n in write.columns if n not in keys})
        )
    params = [_array_param(table.c[name], f"{prefix}_{name}") for name in write.columns]
    if write.kind == "insert":
        values = (
            func.unnest(*params)
            .table_valued(*(column(n) for n in write.columns), with_ordinality="rescind_ord")
            .render_derived(name="v")
        )
        rows = select(*(values.c[n] for n in write.columns)).order_by(values.c.rescind_ord)
        return insert(table).from_select(list(write.columns), rows)
    values = func.unnest(*params).table_valued(*(column(n) for n in write.columns)).render_derived(name="v")
    keys = [c.key for c in table.primary_key.columns]
    return (
        update(table)
        .where(and_(*(table.c[k] == values.c[k] for k in keys)))
        .values({n: values.c[n] for n in write.columns if n not in keys})
    )


def _json_text(value: Any, col: Column[Any], serializer: Any) -> str | None:
    if value is None and getattr(col.type, "none_as_null", False):
        return None
    return serializer(value)


def _pg_params(write: Write, prefix: str, serializer: Any) -> dict[str, Any]:
    table = write.table
    assert table is not None
    out: dict[str, Any] = {}
    if len(write.rows) == 1:
        (row,) = write.rows
        return {f"{prefix}_{name}": row[name] for name in write.columns}
    for name in write.columns:
        col = table.c[name]
        values = [row[name] for row in write.rows]
        if _is_json(col):
            values = [_json_text(v, col, serializer) for v in values]
        out[f"{prefix}_{name}"] = values
    return out


_folded: dict[tuple[Any, ...], Any] = {}


def _shape(write: Write) -> tuple[Any, ...]:
    if write.kind == "statement":
        return ("statement", id(write.stmt))
    return (write.kind, write.table, write.columns, len(write.rows) == 1)


def _fold(writes: Sequence[Write], shape: tuple[Any, ...]) -> Any:
    folded = _folded.get(shape)
    if folded is None:
        built = [w.stmt if w.kind == "statement" else _pg_statement(w, f"w{i}") for i, w in enumerate(writes)]
        *first, folded = built
        for i, stmt in enumerate(first):
            folded = folded.add_cte(stmt.cte(f"w{i}"))  # type: ignore[union-attr]
        # Holds the prebuilt statements too, so that their ids (part of the shape) stay theirs.
        _folded[shape] = (folded, [w.stmt for w in writes])
        return folded
    return folded[0]


def _merged(writes: list[Write]) -> list[Write]:
    """Adjacent inserts of the same columns into the same table as one (rows in order)."""
    out: list[Write] = []
    for w in writes:
        last = out[-1] if out else None
        if (
            last is not None
            and w.kind == last.kind == "insert"
            and w.table is last.table
            and w.columns == last.columns
        ):
            out[-1] = Write("insert", w.table, w.columns, [*last.rows, *w.rows])
        else:
            out.append(w)
    return out


def _collide(writes: Sequence[Write]) -> bool:
    """Whether these writes cannot share a statement: a prebuilt statement twice (its parameters
    would collide), or a table written twice (the order of a statement's CTEs is unspecified, and
    rows must land in the order given, as the outbox's ids do)."""
    raw = [id(w.stmt) for w in writes if w.kind == "statement"]
    tables = [w.table if w.table is not None else getattr(w.stmt, "table", None) for w in writes]
    named = [t for t in tables if t is not None]
    return len(set(raw)) < len(raw) or len(set(named)) < len(named)


# Called with (connection, table, kind, rows) for every insert/update write executed: the audit
# chains (rescind_common.audit_chain) record the writes of the tables they audit.
observers: list[Any] = []
IN_BULK = "rescind_bulk_observed"


def _observe(conn: Connection, writes: Sequence[Write]) -> None:
    for w in writes:
        if w.kind in ("insert", "update"):
            for observer in observers:
                observer(conn, w.table, w.kind, w.rows)


def execute(session_or_conn: Session | Connection, writes: Sequence[Write]) -> None:
    """Run `writes` (none returning rows) in the caller's transaction: one statement on
    PostgreSQL, one executemany each, in order, elsewhere. Writes with no rows are left out. A
    session's pending ORM changes are not flushed: flush first when they must come before."""
    conn = session_or_conn.connection() if isinstance(session_or_conn, Session) else session_or_conn
    todo = _merged([w for w in writes if w.kind == "statement" or w.rows])
    if not todo:
        return
    if not observers:
        _execute(conn, todo)
        return
    _observe(conn, todo)
    conn.info[IN_BULK] = True  # observed here: statement-level observers skip these
    try:
        _execute(conn, todo)
    finally:
        conn.info.pop(IN_BULK, None)


def _execute(conn: Connection, todo: list[Write]) -> None:
    if conn.dialect.name != "postgresql" or _collide(todo):
        for w in todo:
            _run_one(conn, w)
        return
    shape = tuple(_shape(w) for w in todo)
    folded = _fold(todo, shape)
    serializer = getattr(conn.dialect, "_json_serializer", None) or _dumps
    params: dict[str, Any] = {}
    for i, w in enumerate(todo):
        params.update(w.params or {} if w.kind == "statement" else _pg_params(w, f"w{i}", serializer))
    conn.execute(folded, params)


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value)


_single: dict[tuple[Any, ...], Any] = {}


def _executemany_statement(write: Write) -> Any:
    key = _shape(write)
    stmt = _single.get(key)
    if stmt is None:
        table = write.table
        assert table is not None
        if write.kind == "insert":
            # Core, not the ORM's bulk-insert path (which costs several times more Python per row).
            stmt = insert(table)
        else:
            keys = [c.key for c in table.primary_key.columns]
            stmt = (
                update(table)
                .where(and_(*(table.c[k] == bindparam(f"b_{k}") for k in keys)))
                .values({n: bindparam(f"b_{n}") for n in write.columns if n not in keys})
            )
        _single[key] = stmt
    return stmt


def _run_one(conn: Connection, write: Write) -> None:
    if write.kind == "statement":
        conn.execute(write.stmt, write.params or {})  # type: ignore[arg-type]
        return
    stmt = _executemany_statement(write)
    rows = write.rows if write.kind == "insert" else [{f"b_{k}": v for k, v in r.items()} for r in write.rows]
    for part in chunks(rows, EXECUTEMANY_CHUNK):
        conn.execute(stmt, list(part))
