"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 09:06:16.475776
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqlalchemy.dialects import postgresql

import rescind_common.db

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('delivery_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_attempts_delivery_id', ['delivery_id'], unique=False)

    op.create_table('endpoints',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('licensee_id', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('disabled_reason', sa.String(length=500), nullable=True),
    sa.Column('disabled_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('secret_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('previous_secret_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('previous_secret_expires_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failing_since', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_endpoints'))
    )
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.create_index('ix_endpoints_licensee_id_id', ['licensee_id', 'id'], unique=False)

    op.create_table('notices',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('revocation_id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('licensee_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('deadline', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('overdue_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ack', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notices')),
    sa.UniqueConstraint('revocation_id', 'licensee_id', name=op.f('uq_notices_revocation_id_licensee_id'))
    )
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.create_index('ix_notices_licensee_id_id', ['licensee_id', 'id'], unique=False)
        batch_op.create_index('ix_notices_status_deadline', ['status', 'deadline'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_unpublished', ['published_at', 'id'], unique=False)

    op.create_table('processed_events',
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('processed_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_processed_events'))
    )
    op.create_table('revocations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('consent_count', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('occurred_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolve_attempts', sa.Integer(), nullable=False),
    sa.Column('next_resolve_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revocations'))
    )
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.create_index('ix_revocations_state_created_at', ['state', 'created_at'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('notice_id', sa.String(length=40), nullable=False),
    sa.Column('endpoint_id', sa.String(length=40), nullable=False),
    sa.Column('licensee_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=40), nullable=True),
    sa.Column('first_attempt_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_attempt_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('succeeded_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_deliveries_notice_id_notices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('notice_id', 'endpoint_id', name=op.f('uq_deliveries_notice_id_endpoint_id'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)

    op.create_table('notice_models',
    sa.Column('notice_id', sa.String(length=40), nullable=False),
    sa.Column('model_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('shard_ids', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_notice_models_notice_id_notices')),
    sa.PrimaryKeyConstraint('notice_id', 'model_id', name=op.f('pk_notice_models'))
    )
    op.create_table('notice_samples',
    sa.Column('notice_id', sa.String(length=40), nullable=False),
    sa.Column('sample_id', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_notice_samples_notice_id_notices')),
    sa.PrimaryKeyConstraint('notice_id', 'sample_id', name=op.f('pk_notice_samples'))
    )
    op.create_table('revocation_parts',
    sa.Column('revocation_id', sa.String(length=40), nullable=False),
    sa.Column('consent_id', sa.String(length=40), nullable=False),
    sa.Column('chunk_index', sa.Integer(), nullable=False),
    sa.Column('chunk_count', sa.Integer(), nullable=False),
    sa.Column('sample_ids', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('purposes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('licensee_id', sa.String(length=64), nullable=True),
    sa.Column('only_licensee_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['revocation_id'], ['revocations.id'], name=op.f('fk_revocation_parts_revocation_id_revocations')),
    sa.PrimaryKeyConstraint('revocation_id', 'consent_id', 'chunk_index', name=op.f('pk_revocation_parts'))
    )


def downgrade() -> None:
    op.drop_table('revocation_parts')
    op.drop_table('notice_samples')
    op.drop_table('notice_models')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_status_next_attempt_at')

    op.drop_table('deliveries')
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.drop_index('ix_revocations_state_created_at')

    op.drop_table('revocations')
    op.drop_table('processed_events')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_unpublished')

    op.drop_table('outbox')
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.drop_index('ix_notices_status_deadline')
        batch_op.drop_index('ix_notices_licensee_id_id')

    op.drop_table('notices')
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.drop_index('ix_endpoints_licensee_id_id')

    op.drop_table('endpoints')
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_attempts_delivery_id')

    op.drop_table('delivery_attempts')
