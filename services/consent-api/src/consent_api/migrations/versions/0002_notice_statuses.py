"""notice statuses

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:07:37.053288
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import rescind_common.db


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "excluded_licensees",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=False,
                server_default="[]",
            )
        )
    op.create_table('processed_events',
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('processed_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_processed_events'))
    )
    op.create_table('revocation_notices',
    sa.Column('revocation_id', sa.String(length=40), nullable=False),
    sa.Column('licensee_id', sa.String(length=64), nullable=False),
    sa.Column('notice_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('updated_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('revocation_id', 'licensee_id', name=op.f('pk_revocation_notices'))
    )
    op.create_table('revocation_resolutions',
    sa.Column('revocation_id', sa.String(length=40), nullable=False),
    sa.Column('notice_count', sa.Integer(), nullable=False),
    sa.Column('resolved_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('revocation_id', name=op.f('pk_revocation_resolutions'))
    )


def downgrade() -> None:
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_column("excluded_licensees")
    op.drop_table('revocation_resolutions')
    op.drop_table('revocation_notices')
    op.drop_table('processed_events')
