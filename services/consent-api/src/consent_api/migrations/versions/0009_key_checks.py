"""key_checks: check values of the secrets the data depends on (the subject pepper)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 15:50:00

The first consent-api process to hash a `sub` records a check value of its pepper; a process with
another pepper is refused rather than making every seller a new subject. Empty at first: a database
with subjects and no check value was hashed with the legacy pepper of master key `v1`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rescind_common.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_checks",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("created_at", rescind_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_key_checks")),
    )


def downgrade() -> None:
    op.drop_table("key_checks")
