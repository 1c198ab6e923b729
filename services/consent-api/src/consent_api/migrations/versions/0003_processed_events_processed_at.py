"""processed_events: an index on processed_at, for pruning old event ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 13:40:00

The consumer deletes processed event ids older than RESCIND_PROCESSED_EVENTS_RETENTION_HOURS in
chunks; without this index each chunk would scan the whole table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("processed_events", schema=None) as batch_op:
        batch_op.create_index("ix_processed_events_processed_at", ["processed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("processed_events", schema=None) as batch_op:
        batch_op.drop_index("ix_processed_events_processed_at")
