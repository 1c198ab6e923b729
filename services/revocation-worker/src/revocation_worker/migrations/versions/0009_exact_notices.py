"""Exact notices: per notice the licenses its revocation hit (notice_licenses), the licensee's name
and the trigger; per notice model its scope (whole | shards) and the hit licenses it was trained on

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:00:00

Triggers are named as notices name them (withdrawal | purpose_withdrawal | licensee_withdrawal |
expiry | erasure): revocations.trigger widens to hold them and its old `subject` becomes
`withdrawal`. Notices made before keep what they had: their trigger is their revocation's, their
licenses and names are unknown (no rows, null), their models' scope is read from shard_ids.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _widen_trigger(length: int) -> None:
    if _sqlite():
        # Native ALTERs (SQLite >= 3.35): a batch copy of `revocations` would have to drop the table
        # that revocation_parts and revocation_sample_sets reference.
        op.execute(f"ALTER TABLE revocations ADD COLUMN trigger_new VARCHAR({length}) NOT NULL DEFAULT ''")
        op.execute("UPDATE revocations SET trigger_new = trigger")
        op.execute("ALTER TABLE revocations DROP COLUMN trigger")
        op.execute("ALTER TABLE revocations RENAME COLUMN trigger_new TO trigger")
    else:
        op.alter_column("revocations", "trigger", type_=sa.String(length=length), existing_nullable=False)


def upgrade() -> None:
    _widen_trigger(32)
    op.execute("UPDATE revocations SET trigger = 'withdrawal' WHERE trigger = 'subject'")
    # Added columns need no table copy on SQLite either.
    op.add_column("notices", sa.Column("licensee_name", sa.String(length=200), nullable=True))
    op.add_column("notices", sa.Column("trigger", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE notices SET trigger = (SELECT r.trigger FROM revocations r WHERE r.id = notices.revocation_id)"
    )
    op.add_column("notice_models", sa.Column("scope", sa.String(length=8), nullable=True))
    op.add_column("notice_models", sa.Column("license_ids", JSON, nullable=True))
    op.create_table(
        "notice_licenses",
        sa.Column("notice_id", sa.String(length=40), nullable=False),
        sa.Column("license_id", sa.String(length=40), nullable=False),
        sa.Column("consent_id", sa.String(length=40), nullable=False),
        sa.Column("purposes", JSON, nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notice_id"], ["notices.id"], name=op.f("fk_notice_licenses_notice_id_notices")
        ),
        sa.PrimaryKeyConstraint("notice_id", "license_id", name=op.f("pk_notice_licenses")),
    )


def downgrade() -> None:
    op.drop_table("notice_licenses")
    for table, column in (
        ("notice_models", "license_ids"),
        ("notice_models", "scope"),
        ("notices", "trigger"),
        ("notices", "licensee_name"),
    ):
        if _sqlite():
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # no copy of a referenced table
        else:
            op.drop_column(table, column)
    # The newer triggers were withdrawals by the subject to the old schema.
    op.execute(
        "UPDATE revocations SET trigger = 'subject' "
        "WHERE trigger IN ('withdrawal', 'purpose_withdrawal', 'licensee_withdrawal')"
    )
    _widen_trigger(16)
