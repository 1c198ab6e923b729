"""registry's declarative base (its own metadata, its own Alembic history) and engine."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, MetaData, event
from sqlalchemy.orm import DeclarativeBase

from rescind_common.db import NAMING_CONVENTION, DbSession, make_engine


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_registry_engine(url: str, *, pool_size: int) -> Engine:
    engine = make_engine(url, pool_size=pool_size)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _custom_plans(dbapi_conn: Any, _record: Any) -> None:
            # The registry's queries take id arrays (`= ANY(:ids)`) of 1 to 10,000 elements. psycopg
            # prepares a statement after 5 runs and PostgreSQL then may settle on a generic plan,
            # which misjudges those arrays (3x slower holders lookups at 10 M rows): plan each time.
            with dbapi_conn.cursor() as cur:
                cur.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_conn.commit()

    return engine


__all__ = ["Base", "DbSession", "make_registry_engine"]
