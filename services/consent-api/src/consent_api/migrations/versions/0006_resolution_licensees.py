"""revocation_resolutions.licensee_ids: who the worker's resolution of a revocation told

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00

A revocation's overall status counted pending notices as "fewer notices than the resolution's
notice_count". A licensee told later (a license recorded while the registry's projection lagged
behind the revocation) then filled the place of a named licensee whose notice had not arrived
yet. With the names the status waits for each of them. Rows from before keep NULL and the count.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rescind_common.db import JSONType

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("revocation_resolutions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("licensee_ids", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("revocation_resolutions", schema=None) as batch_op:
        batch_op.drop_column("licensee_ids")
