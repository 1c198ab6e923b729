"""Alembic plumbing shared by every service: each keeps its own history and calls these."""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData

from rescind_common.db import make_engine


def alembic_config(script_location: Path, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(script_location: Path, database_url: str, revision: str = "head") -> None:
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(script_location, database_url), revision)


def run_env(metadata: MetaData) -> None:
    """The body of a service's migrations/env.py (SQLite uses batch mode for ALTERs)."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    assert url
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def create_outbox_log_table() -> None:
    """In a service's migration: the `outbox_log` table of `rescind_common.outbox.OutboxLogMixin`,
    column for column (the migrations test compares every service's history with its models)."""
    import sqlalchemy as sa
    from alembic import op

    from rescind_common.db import JSONType, UTCDateTime

    op.create_table(
        "outbox_log",
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("topic_id", sa.String(length=64), nullable=True),
        sa.Column("floors", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_outbox_log")),
    )
