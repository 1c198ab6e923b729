"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 08:54:12.460050
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
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('entity_id', sa.String(length=40), nullable=False),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('subject_id', 'seq', name=op.f('uq_audit_log_subject_id_seq'))
    )
    op.create_table('consents',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('purposes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('revoked_purposes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('licensee_id', sa.String(length=64), nullable=True),
    sa.Column('expires_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('compensation', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('active_sample_count', sa.Integer(), nullable=False),
    sa.Column('receipt_id', sa.String(length=40), nullable=False),
    sa.Column('receipt', sa.Text(), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consents')),
    sa.UniqueConstraint('receipt_id', name=op.f('uq_consents_receipt_id'))
    )
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.create_index('ix_consents_status_expires_at', ['status', 'expires_at'], unique=False)
        batch_op.create_index('ix_consents_subject_id_id', ['subject_id', 'id'], unique=False)

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

    op.create_table('revocations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('consent_id', sa.String(length=40), nullable=True),
    sa.Column('licensee_id', sa.String(length=64), nullable=True),
    sa.Column('purpose', sa.String(length=64), nullable=True),
    sa.Column('reason_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('consent_ids', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revocations'))
    )
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.create_index('ix_revocations_subject_id_id', ['subject_id', 'id'], unique=False)

    op.create_table('rights_requests',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('revocation_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rights_requests'))
    )
    with op.batch_alter_table('rights_requests', schema=None) as batch_op:
        batch_op.create_index('ix_rights_requests_subject_id_id', ['subject_id', 'id'], unique=False)

    op.create_table('samples',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('media_type', sa.String(length=255), nullable=True),
    sa.Column('attributes_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('subject_id', 'sha256', name=op.f('uq_samples_subject_id_sha256'))
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index('ix_samples_subject_id_id', ['subject_id', 'id'], unique=False)

    op.create_table('subject_keys',
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('subject_id', name=op.f('pk_subject_keys'))
    )
    op.create_table('subjects',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('sub_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('erased_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('profile_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('audit_seq', sa.Integer(), nullable=False),
    sa.Column('audit_head', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subjects')),
    sa.UniqueConstraint('sub_hash', name=op.f('uq_subjects_sub_hash'))
    )
    op.create_table('consent_samples',
    sa.Column('consent_id', sa.String(length=40), nullable=False),
    sa.Column('sample_id', sa.String(length=40), nullable=False),
    sa.Column('revoked_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revocation_id', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['consent_id'], ['consents.id'], name=op.f('fk_consent_samples_consent_id_consents')),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_consent_samples_sample_id_samples')),
    sa.PrimaryKeyConstraint('consent_id', 'sample_id', name=op.f('pk_consent_samples'))
    )
    with op.batch_alter_table('consent_samples', schema=None) as batch_op:
        batch_op.create_index('ix_consent_samples_sample_id', ['sample_id'], unique=False)

    op.create_table('revocation_items',
    sa.Column('revocation_id', sa.String(length=40), nullable=False),
    sa.Column('consent_id', sa.String(length=40), nullable=False),
    sa.Column('sample_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['revocation_id'], ['revocations.id'], name=op.f('fk_revocation_items_revocation_id_revocations')),
    sa.PrimaryKeyConstraint('revocation_id', 'consent_id', 'sample_id', name=op.f('pk_revocation_items'))
    )


def downgrade() -> None:
    op.drop_table('revocation_items')
    with op.batch_alter_table('consent_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_samples_sample_id')

    op.drop_table('consent_samples')
    op.drop_table('subjects')
    op.drop_table('subject_keys')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_subject_id_id')

    op.drop_table('samples')
    with op.batch_alter_table('rights_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_rights_requests_subject_id_id')

    op.drop_table('rights_requests')
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.drop_index('ix_revocations_subject_id_id')

    op.drop_table('revocations')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_unpublished')

    op.drop_table('outbox')
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.drop_index('ix_consents_subject_id_id')
        batch_op.drop_index('ix_consents_status_expires_at')

    op.drop_table('consents')
    op.drop_table('audit_log')
