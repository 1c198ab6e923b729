"""registry's declarative base (its own metadata, its own Alembic history), engine, outbox table and
what its relay knows of the broker's log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, MetaData, event
from sqlalchemy.orm import DeclarativeBase

from rescind_common.db import NAMING_CONVENTION, DbSession, make_engine
from rescind_common.outbox import OutboxLogMixin, OutboxMixin


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Outbox(OutboxMixin, Base):
    """License events (rescind.v1.LicenseEvent), written by the projection in the transaction that
    withdraws the samples; `registry relay` publishes them."""


class OutboxLog(OutboxLogMixin, Base):
    pass


def make_registry_engine(url: str, *, pool_size: int) -> Engine:
    engine = make_engine(url, pool_size=pool_size)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _custom_plans(dbapi_conn: Any, _record: Any) -> None:
            # The registry's queries take id arrays (`= ANY(:ids)`) of 1 to 10,000 elements. psycopg
            # prepares a statement after 5 runs and PostgreSQL then may settle on a generic plan,
            # which misjudges those arrays (much slower holders lookups on large tables): plan each time.
            with dbapi_conn.cursor() as cur:
                cur.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_conn.commit()

    return engine


__all__ = ["Base", "DbSession", "Outbox", "OutboxLog", "make_registry_engine"]
