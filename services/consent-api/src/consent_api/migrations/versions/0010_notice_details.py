"""revocation_notices: what each holder was told, its delivery, its final answer and audit positions

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:00:00

The worker's notice events now carry the licensee's name, the webhook-id, the licenses and models
named, the delivery's HTTP status and the holder's final answer (issue 14). The seller's view and
the signed proof of a revocation show them. Rows from before keep NULLs. `status` widens for
`partially_acknowledged`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rescind_common.db import JSONType, UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    ("licensee_name", lambda: sa.String(length=200)),
    ("webhook_id", lambda: sa.String(length=64)),
    ("told_at", lambda: UTCDateTime(timezone=True)),
    ("deadline", lambda: UTCDateTime(timezone=True)),
    ("licenses", lambda: JSONType),
    ("models", lambda: JSONType),
    ("delivered_at", lambda: UTCDateTime(timezone=True)),
    ("first_attempt_at", lambda: UTCDateTime(timezone=True)),
    ("delivery_status_code", lambda: sa.Integer()),
    ("outcome", lambda: sa.String(length=32)),
    ("basis", lambda: sa.String(length=64)),
    ("model_answers", lambda: JSONType),
    ("complete", lambda: sa.Boolean()),
    ("evidence_digest", lambda: sa.String(length=80)),
    ("ack_digest", lambda: sa.String(length=80)),
    ("signature_verified", lambda: sa.Boolean()),
    ("answered_at", lambda: UTCDateTime(timezone=True)),
    ("reminded_at", lambda: UTCDateTime(timezone=True)),
    ("overdue_at", lambda: UTCDateTime(timezone=True)),
    ("failed_at", lambda: UTCDateTime(timezone=True)),
    ("steps", lambda: JSONType),
]


def upgrade() -> None:
    with op.batch_alter_table("revocation_notices", schema=None) as batch_op:
        batch_op.alter_column(
            "status", existing_type=sa.String(length=16), type_=sa.String(length=24), existing_nullable=False
        )
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("revocation_notices", schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
        batch_op.alter_column(
            "status", existing_type=sa.String(length=24), type_=sa.String(length=16), existing_nullable=False
        )
