"""subject_keys.key_id: which master key wrapped each subject's data key

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:30:00

Keys wrapped before key ids were wrapped under the single RESCIND_CONSENT_MASTER_KEY, which is key
`v1` of the keyring: the server default says so, and nothing is re-encrypted. `consent-api keys
rotate` rewraps them under the current key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subject_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=32), nullable=False, server_default="v1"))


def downgrade() -> None:
    with op.batch_alter_table("subject_keys", schema=None) as batch_op:
        batch_op.drop_column("key_id")
