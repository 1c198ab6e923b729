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


def create_outbox_table() -> None:
    """In a service's migration: the `outbox` table of `rescind_common.outbox.OutboxMixin`, column for
    column, with its unpublished-rows index. Add `create_outbox_notify_trigger()` after it."""
    import sqlalchemy as sa
    from alembic import op

    from rescind_common.db import UTCDateTime

    op.create_table(
        "outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_unpublished", ["published_at", "id"], unique=False)


def create_outbox_notify_trigger() -> None:
    """In a service's migration: `NOTIFY rescind_outbox` whenever rows are inserted into its `outbox`,
    so that the relay wakes on commit (rescind_common.outbox).

    A statement trigger rather than a NOTIFY from each writer: every way a row gets into the outbox
    (ORM adds, Core inserts, inserts folded into another statement's CTEs, an operator's SQL) is
    covered, and the writers need not know. PostgreSQL sends the notification on commit only and
    once per transaction however many statements fired it. The channel is
    rescind_common.outbox.OUTBOX_CHANNEL. SQLite has no NOTIFY: nothing to do there (its relay
    polls). `ALTER DATABASE ... SET rescind.outbox_notify = off` silences it (the relays then poll)."""
    from alembic import op

    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION rescind_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF coalesce(current_setting('rescind.outbox_notify', true), '') <> 'off' THEN
                PERFORM pg_notify('rescind_outbox', '');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION rescind_outbox_notify()"
    )


def drop_outbox_notify_trigger() -> None:
    """Undo `create_outbox_notify_trigger()` (before dropping the outbox, or on its own)."""
    from alembic import op

    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS rescind_outbox_notify()")


def create_audit_chain_tables() -> None:
    """In a service's migration: `audit_entries` and `audit_heads` of
    `rescind_common.audit_chain.ChainEntryMixin` / `ChainHeadMixin`, column for column."""
    import sqlalchemy as sa
    from alembic import op
    from sqlalchemy.dialects import postgresql

    from rescind_common.db import UTCDateTime

    op.create_table(
        "audit_entries",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("chain_id", "seq", name=op.f("uq_audit_entries_chain_id_seq")),
    )
    op.create_table(
        "audit_heads",
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_audit_heads")),
    )


def create_audit_checkpoint_tables() -> None:
    """In a service's migration: `audit_checkpoints` and `audit_checkpoint_heads` of
    `rescind_common.audit_chain.CheckpointMixin` / `CheckpointHeadMixin`."""
    import sqlalchemy as sa
    from alembic import op

    from rescind_common.db import UTCDateTime

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("previous_root", sa.String(length=64), nullable=False),
        sa.Column("chain_count", sa.Integer(), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_checkpoint_heads",
        sa.Column("checkpoint_seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("checkpoint_seq", "chain_id", name=op.f("pk_audit_checkpoint_heads")),
    )
    op.create_index(
        "ix_audit_checkpoint_heads_chain_id_checkpoint_seq",
        "audit_checkpoint_heads",
        ["chain_id", "checkpoint_seq"],
        unique=False,
    )


def drop_audit_tables(*, chains: bool) -> None:
    from alembic import op

    op.drop_index("ix_audit_checkpoint_heads_chain_id_checkpoint_seq", table_name="audit_checkpoint_heads")
    op.drop_table("audit_checkpoint_heads")
    op.drop_table("audit_checkpoints")
    if chains:
        op.drop_table("audit_heads")
        op.drop_table("audit_entries")
