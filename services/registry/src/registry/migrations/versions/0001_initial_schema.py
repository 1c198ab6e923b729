"""initial schema: licensees, licenses and their samples, model lineage, the consent projection

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 09:06:25.824232
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
    op.create_table('licensees',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('contact_email', sa.String(length=320), nullable=True),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_licensees'))
    )
    op.create_table('processed_events',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('occurred_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('processed_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_processed_events'))
    )
    op.create_table('projected_consents',
    sa.Column('consent_id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('licensee_id', sa.String(length=64), nullable=True),
    sa.Column('purposes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('revoked_purposes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('excluded_licensees', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('expires_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('granted_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_by', sa.String(length=40), nullable=True),
    sa.Column('updated_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consent_id', name=op.f('pk_projected_consents'))
    )
    with op.batch_alter_table('projected_consents', schema=None) as batch_op:
        batch_op.create_index('ix_projected_consents_subject_id', ['subject_id'], unique=False)

    op.create_table('projected_samples',
    sa.Column('sample_id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('registered_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sample_id', name=op.f('pk_projected_samples'))
    )
    with op.batch_alter_table('projected_samples', schema=None) as batch_op:
        batch_op.create_index('ix_projected_samples_subject_id', ['subject_id'], unique=False)

    op.create_table('subject_erasures',
    sa.Column('revocation_id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('occurred_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('revocation_id', name=op.f('pk_subject_erasures'))
    )
    op.create_table('licenses',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('licensee_id', sa.String(length=40), nullable=False),
    sa.Column('consent_id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('dataset_name', sa.String(length=200), nullable=False),
    sa.Column('dataset_version', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('revoked_sample_count', sa.Integer(), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['licensee_id'], ['licensees.id'], name=op.f('fk_licenses_licensee_id_licensees')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_licenses')),
    sa.UniqueConstraint('licensee_id', 'consent_id', 'purpose', 'dataset_name', 'dataset_version', name=op.f('uq_licenses_licensee_id_consent_id_purpose_dataset_name_dataset_version'))
    )
    with op.batch_alter_table('licenses', schema=None) as batch_op:
        batch_op.create_index('ix_licenses_consent_id', ['consent_id'], unique=False)
        batch_op.create_index('ix_licenses_licensee_id_id', ['licensee_id', 'id'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('licensee_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('created_at', rescind_common.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['licensee_id'], ['licensees.id'], name=op.f('fk_models_licensee_id_licensees')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('licensee_id', 'name', 'version', name=op.f('uq_models_licensee_id_name_version'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index('ix_models_licensee_id_id', ['licensee_id', 'id'], unique=False)

    op.create_table('projected_consent_samples',
    sa.Column('consent_id', sa.String(length=40), nullable=False),
    sa.Column('sample_id', sa.String(length=40), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.Column('revoked_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revocation_id', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['consent_id'], ['projected_consents.consent_id'], name=op.f('fk_projected_consent_samples_consent_id_projected_consents')),
    sa.PrimaryKeyConstraint('consent_id', 'sample_id', name=op.f('pk_projected_consent_samples'))
    )
    with op.batch_alter_table('projected_consent_samples', schema=None) as batch_op:
        batch_op.create_index('ix_projected_consent_samples_sample_id', ['sample_id'], unique=False)

    op.create_table('license_samples',
    sa.Column('license_id', sa.String(length=40), nullable=False),
    sa.Column('sample_id', sa.String(length=40), nullable=False),
    sa.Column('revoked_at', rescind_common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revocation_id', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['license_id'], ['licenses.id'], name=op.f('fk_license_samples_license_id_licenses')),
    sa.PrimaryKeyConstraint('license_id', 'sample_id', name=op.f('pk_license_samples'))
    )
    with op.batch_alter_table('license_samples', schema=None) as batch_op:
        batch_op.create_index('ix_license_samples_sample_id_license_id', ['sample_id', 'license_id'], unique=False)

    op.create_table('model_licenses',
    sa.Column('model_id', sa.String(length=40), nullable=False),
    sa.Column('license_id', sa.String(length=40), nullable=False),
    sa.Column('shard_id', sa.String(length=100), nullable=False),
    sa.ForeignKeyConstraint(['license_id'], ['licenses.id'], name=op.f('fk_model_licenses_license_id_licenses')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_licenses_model_id_models')),
    sa.PrimaryKeyConstraint('model_id', 'license_id', 'shard_id', name=op.f('pk_model_licenses'))
    )
    with op.batch_alter_table('model_licenses', schema=None) as batch_op:
        batch_op.create_index('ix_model_licenses_license_id_model_id', ['license_id', 'model_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('model_licenses', schema=None) as batch_op:
        batch_op.drop_index('ix_model_licenses_license_id_model_id')

    op.drop_table('model_licenses')
    with op.batch_alter_table('license_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_license_samples_sample_id_license_id')

    op.drop_table('license_samples')
    with op.batch_alter_table('projected_consent_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_projected_consent_samples_sample_id')

    op.drop_table('projected_consent_samples')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index('ix_models_licensee_id_id')

    op.drop_table('models')
    with op.batch_alter_table('licenses', schema=None) as batch_op:
        batch_op.drop_index('ix_licenses_licensee_id_id')
        batch_op.drop_index('ix_licenses_consent_id')

    op.drop_table('licenses')
    op.drop_table('subject_erasures')
    with op.batch_alter_table('projected_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_projected_samples_subject_id')

    op.drop_table('projected_samples')
    with op.batch_alter_table('projected_consents', schema=None) as batch_op:
        batch_op.drop_index('ix_projected_consents_subject_id')

    op.drop_table('projected_consents')
    op.drop_table('processed_events')
    op.drop_table('licensees')
