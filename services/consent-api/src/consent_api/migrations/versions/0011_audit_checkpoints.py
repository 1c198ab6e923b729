"""audit_checkpoints, audit_checkpoint_heads: signed checkpoints over every subject chain's head

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-04 19:00:00

The serve process folds every subject's chain head (subjects.audit_seq, audit_head) into a Merkle
root at RESCIND_AUDIT_CHECKPOINT_INTERVAL_SECONDS, signs it with the receipt key and appends it to
the consent topic (rescind_common.audit_chain, docs/adr/0007-signed-audit-checkpoints.md). The
chains themselves (audit_log) are unchanged.
"""

from collections.abc import Sequence

from rescind_common.migrations import create_audit_checkpoint_tables, drop_audit_tables

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_checkpoint_tables()


def downgrade() -> None:
    drop_audit_tables(chains=False)
