"""sample_hashes: the subject that registered each content hash first

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:40:00

A second subject registering the same sha256 is refused (docs/adr/0006). Filled from the samples
already registered: the earliest registration of each hash holds it. Cross-subject duplicates
registered before this change stay as they are (docs/operations.md says how to find them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rescind_common.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sample_hashes",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("sample_id", sa.String(length=40), nullable=False),
        sa.Column("registered_at", rescind_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_sample_hashes")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "INSERT INTO sample_hashes (sha256, subject_id, sample_id, registered_at) "
            "SELECT DISTINCT ON (sha256) sha256, subject_id, id, created_at FROM samples "
            "ORDER BY sha256, created_at, id"
        )
    else:
        # The first row of each hash, in registration order, wins; the rest are ignored.
        op.execute(
            "INSERT OR IGNORE INTO sample_hashes (sha256, subject_id, sample_id, registered_at) "
            "SELECT sha256, subject_id, id, created_at FROM samples ORDER BY created_at, id"
        )


def downgrade() -> None:
    op.drop_table("sample_hashes")
