"""revocation_rechecks: licensees the registry says lost samples to a revocation, to make sure each
has a notice for it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 10:00:00

Filled from the license topic (rescind.v1.LicenseSamplesWithdrawn); the resolver drops a row once
the licensee has a notice for the revocation, making one when a license recorded while the
registry's projection lagged was missed by the revocation's first holders lookup.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rescind_common.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revocation_rechecks",
        sa.Column("revocation_id", sa.String(length=40), nullable=False),
        sa.Column("licensee_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", rescind_common.db.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_check_at", rescind_common.db.UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("revocation_id", "licensee_id", name=op.f("pk_revocation_rechecks")),
    )
    with op.batch_alter_table("revocation_rechecks", schema=None) as batch_op:
        batch_op.create_index("ix_revocation_rechecks_next_check_at", ["next_check_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("revocation_rechecks", schema=None) as batch_op:
        batch_op.drop_index("ix_revocation_rechecks_next_check_at")
    op.drop_table("revocation_rechecks")
