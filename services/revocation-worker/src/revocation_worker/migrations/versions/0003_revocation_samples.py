"""revocation samples: a revocation's sample set stored once, notices that cover all of it

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-28 11:40:00

Numbered 0003 (there is no worker 0002 on this branch): if a 0002 lands first, point
down_revision at it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rescind_common.db

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revocation_sample_sets",
        sa.Column("revocation_id", sa.String(length=40), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", rescind_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["revocation_id"],
            ["revocations.id"],
            name=op.f("fk_revocation_sample_sets_revocation_id_revocations"),
        ),
        sa.PrimaryKeyConstraint("revocation_id", name=op.f("pk_revocation_sample_sets")),
    )
    op.create_table(
        "revocation_samples",
        sa.Column("revocation_id", sa.String(length=40), nullable=False),
        sa.Column("sample_id", sa.String(length=40), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["revocation_id"],
            ["revocation_sample_sets.revocation_id"],
            name=op.f("fk_revocation_samples_revocation_id_revocation_sample_sets"),
        ),
        sa.PrimaryKeyConstraint("revocation_id", "sample_id", name=op.f("pk_revocation_samples")),
    )
    # Existing notices keep their notice_samples rows: false for them. A plain ADD COLUMN on both
    # backends (a SQLite batch copy would drop `notices`, which other tables reference).
    op.add_column(
        "notices",
        sa.Column("covers_revocation_samples", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    # A rollback keeps every notice readable: copy the shared sets back into per-notice rows.
    op.execute(
        "INSERT INTO notice_samples (notice_id, sample_id, sha256, kind) "
        "SELECT n.id, r.sample_id, r.sha256, r.kind FROM notices n "
        "JOIN revocation_samples r ON r.revocation_id = n.revocation_id "
        "WHERE n.covers_revocation_samples"
    )
    if op.get_bind().dialect.name == "sqlite":
        # Native DROP COLUMN (SQLite >= 3.35): a batch copy of `notices` would have to drop the
        # table that notice_samples and deliveries reference.
        op.execute("ALTER TABLE notices DROP COLUMN covers_revocation_samples")
    else:
        op.drop_column("notices", "covers_revocation_samples")
    op.drop_table("revocation_samples")
    op.drop_table("revocation_sample_sets")
