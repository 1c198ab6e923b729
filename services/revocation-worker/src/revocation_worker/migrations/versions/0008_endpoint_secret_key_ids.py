"""endpoints.secret_key_id, previous_secret_key_id: which key sealed each endpoint secret

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:30:00

Secrets sealed before key ids were sealed under the single RESCIND_WORKER_SECRET_KEY, which is key
`v1` of the keyring: so say the new columns, and nothing is re-encrypted. `revocation-worker keys
rotate` reseals them under the current key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("secret_key_id", sa.String(length=32), nullable=False, server_default="v1")
        )
        batch_op.add_column(sa.Column("previous_secret_key_id", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE endpoints SET previous_secret_key_id = 'v1' WHERE previous_secret_sealed IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.drop_column("previous_secret_key_id")
        batch_op.drop_column("secret_key_id")
