"""outbox, outbox_log: the registry publishes license events (samples withdrawn from a license)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 10:00:00

The projection writes one LicenseSamplesWithdrawn per license a consent event took samples from, in
the transaction that takes them (rescind.v1.LicenseEvent, topic rescind.license.v1); `registry
relay` publishes them, woken by the same NOTIFY trigger as the other services' outboxes, and keeps
in outbox_log what it knows of the broker's log (rescind_common.outbox). revocation-worker reads them
to tell a licensee whose license was recorded while the projection lagged behind a revocation.
"""

from collections.abc import Sequence

from alembic import op

from rescind_common.migrations import (
    create_outbox_log_table,
    create_outbox_notify_trigger,
    create_outbox_table,
    drop_outbox_notify_trigger,
)

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_table()
    create_outbox_notify_trigger()
    create_outbox_log_table()


def downgrade() -> None:
    op.drop_table("outbox_log")
    drop_outbox_notify_trigger()
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_unpublished")
    op.drop_table("outbox")
