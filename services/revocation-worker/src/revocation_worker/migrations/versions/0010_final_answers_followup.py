"""final answers and follow-up: notices.answer, notices.reminded_at, deliveries.kind, ack_keys,
licensee_policies

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-04 19:00:00

A notice's deliveries were one per endpoint; now one per endpoint and kind (the notice itself, its
reminder, its overdue notice): existing rows are `notice`. `partially_acknowledged` needs a wider
status column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rescind_common.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite keeps any length, and re-creating `notices` there would break the foreign keys into it.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "notices",
            "status",
            existing_type=sa.String(length=16),
            type_=sa.String(length=24),
            existing_nullable=False,
        )
    op.add_column("notices", sa.Column("answer", rescind_common.db.JSONType, nullable=True))
    op.add_column("notices", sa.Column("reminded_at", rescind_common.db.UTCDateTime(), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="notice"))
        batch_op.drop_constraint("uq_deliveries_notice_id_endpoint_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_deliveries_notice_id_endpoint_id_kind", ["notice_id", "endpoint_id", "kind"]
        )
    op.create_table(
        "ack_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("licensee_id", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("jwk", rescind_common.db.JSONType, nullable=False),
        sa.Column("created_at", rescind_common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ack_keys")),
        sa.UniqueConstraint("licensee_id", "kid", name=op.f("uq_ack_keys_licensee_id_kid")),
    )
    with op.batch_alter_table("ack_keys", schema=None) as batch_op:
        batch_op.create_index("ix_ack_keys_licensee_id_id", ["licensee_id", "id"], unique=False)
    op.create_table(
        "licensee_policies",
        sa.Column("licensee_id", sa.String(length=64), nullable=False),
        sa.Column("deadline_days", sa.Float(), nullable=True),
        sa.Column("deadline_months", sa.Integer(), nullable=True),
        sa.Column("updated_at", rescind_common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("licensee_id", name=op.f("pk_licensee_policies")),
    )


def downgrade() -> None:
    op.drop_table("licensee_policies")
    with op.batch_alter_table("ack_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_ack_keys_licensee_id_id")
    op.drop_table("ack_keys")
    op.execute("DELETE FROM deliveries WHERE kind <> 'notice'")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("uq_deliveries_notice_id_endpoint_id_kind", type_="unique")
        batch_op.create_unique_constraint("uq_deliveries_notice_id_endpoint_id", ["notice_id", "endpoint_id"])
        batch_op.drop_column("kind")
    op.execute("UPDATE notices SET status = 'delivered' WHERE status = 'partially_acknowledged'")
    op.drop_column("notices", "reminded_at")
    op.drop_column("notices", "answer")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "notices",
            "status",
            existing_type=sa.String(length=24),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
