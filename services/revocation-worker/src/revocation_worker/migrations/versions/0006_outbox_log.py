"""outbox_log: what the outbox relay knows of the broker's log of each topic, across restarts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:00:00

The relay compares it with the broker at start and at every topic check; a missing topic, another
topic id or an end offset below one already published means the broker lost the log, and the
retained rows are published again (rescind_common.outbox). Starting empty is safe: the relay
records what it finds.
"""

from collections.abc import Sequence

from alembic import op

from rescind_common.migrations import create_outbox_log_table

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_log_table()


def downgrade() -> None:
    op.drop_table("outbox_log")
