"""Database engine, declarative base and the request-owned transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Select,
    create_engine,
    event,
    exc,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")

# Stable constraint names on SQLite and PostgreSQL alike, so migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# A pooled connection unused for longer than this is pinged before it is handed out (make_engine).
IDLE_PING_SECONDS = 1.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    pool_timeout: float = 5.0,
    idle_ping_seconds: float = IDLE_PING_SECONDS,
    echo: bool = False,
) -> Engine:
    """`max_overflow` defaults to `pool_size`; `pool_timeout` is how long a checkout may wait for a
    connection before `sqlalchemy.exc.TimeoutError` (answered 503 + Retry-After).

    PostgreSQL connections are pinged at checkout only when they sat in the pool longer than
    `idle_ping_seconds` (a dead one is replaced before the caller sees it): a busy pool skips the
    round trip (one in ten of a grant's), an idle service still survives a database restart without
    a failed request. A connection that dies in use fails its statement; SQLAlchemy sees the
    disconnect, invalidates the pool, and the API answers 503 (the loops retry).

    Statement parameters (e-mails, evidence, secrets) never appear in a database error's message,
    and so never in a logged traceback: `hide_parameters`."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size if max_overflow is None else max_overflow,
            pool_timeout=pool_timeout,
            json_serializer=lambda o: json.dumps(o, separators=(",", ":")),
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy manage transactions; WAL lets the relay read while the API writes.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # BEGIN IMMEDIATE takes the write lock up front: no deadlocking upgrades.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=pool_timeout,
        connect_args={"connect_timeout": 5},
        hide_parameters=True,
    )

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= idle_ping_seconds:
            return  # new, or used moments ago
        try:
            ok = engine.dialect.do_ping(dbapi_conn)
        except Exception:
            ok = False
        if not ok:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError("pooled connection is dead")

    return engine


def keyset_page(
    session: Session, stmt: Select[Any], key: Any, after: str | int | None, limit: int
) -> list[Any]:
    """The next `limit` rows of `stmt` in `key` order, after the cursor's key (`pagination.page_of`
    cuts the page): the one shape of every list endpoint's query."""
    if after:
        stmt = stmt.where(key > after)
    return list(session.scalars(stmt.order_by(key).limit(limit)))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


class Overloaded(Exception):
    """No database slot came free in time: answered 503 + Retry-After at once (admission control)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("overloaded")
        self.retry_after = retry_after


class DbAdmission:
    """Admission control in front of the database: at most `slots` requests hold a session at once.

    A request waits (on the event loop, holding no thread and no connection) at most `timeout`
    seconds for a slot, else it is refused with `Overloaded`. With `slots` no larger than the pool
    and the threadpool larger than `slots`, a request that holds a connection never waits for a
    thread, and a thread never waits for a connection: nothing sits idle in transaction while
    requests queue, and an overloaded service answers 503 quickly instead of queueing for seconds.
    """

    def __init__(self, slots: int, timeout: float, *, thread_headroom: int = 8) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.timeout = timeout
        self.retry_after = max(1, math.ceil(timeout))
        self.thread_headroom = thread_headroom
        # One semaphore per event loop (TestClient runs a loop per client; uvicorn one per process).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._loop, self._sem = loop, asyncio.Semaphore(self.slots)
            # Every admitted request needs a worker thread for its sync handler and its commit;
            # sync dependencies (auth) of requests still queueing need some more.
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, self.slots + self.thread_headroom)
        return self._sem

    @property
    def in_use(self) -> int:
        sem = self._sem
        return 0 if sem is None else self.slots - sem._value

    async def acquire(self) -> None:
        sem = self._semaphore()
        if sem.locked():
            try:
                await asyncio.wait_for(sem.acquire(), self.timeout)
            except TimeoutError:
                raise Overloaded(self.retry_after) from None
        else:
            await sem.acquire()

    def release(self) -> None:
        assert self._sem is not None
        self._sem.release()


# Set in session.info once the request's transaction was committed and the session closed early.
_FINISHED = "rescind_finished"


def _finish(session: Session, ok: bool) -> None:
    try:
        if ok:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


def _run_and_commit(session: Session, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    result = fn(*args)
    _finish(session, True)
    session.info[_FINISHED] = True
    return result


async def run_and_commit(session: Session, fn: Callable[..., T], *args: Any) -> T:
    """For async endpoints: `fn(*args)` (the request's database work) and the commit of the
    request's session in one worker-thread hop instead of two. The session dependency still owns
    the transaction: when `fn` or the commit raises it rolls back as always; after a commit here it
    only gives the admission slot back. Call it once, last: the session is closed afterwards."""
    return await anyio.to_thread.run_sync(_run_and_commit, session, fn, args)


async def get_db_session(request: Request) -> AsyncIterator[Session]:
    """The request's session (from `app.state.session_factory`): commits when the handler
    returns, rolls back when it raises. Handlers and services never call `commit()`.

    Behind `app.state.db_admission` (a `DbAdmission`) when the app has one: the slot is taken before
    the session exists and given back after the commit (or rollback) and close."""
    admission: DbAdmission | None = getattr(request.app.state, "db_admission", None)
    if admission is not None:
        await admission.acquire()
    try:
        session: Session = request.app.state.session_factory()
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_finish, session, False)
            raise
        if not session.info.get(_FINISHED):
            await anyio.to_thread.run_sync(_finish, session, True)
    finally:
        if admission is not None:
            admission.release()


# scope="function": the commit happens before the response is sent. With FastAPI's default
# ("request") the client could get a 201/202 for a change whose commit then failed (the database
# went away), and a read right after a write could miss it.
DbSession = Annotated[Session, Depends(get_db_session, scope="function")]


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except Exception:
        return False
