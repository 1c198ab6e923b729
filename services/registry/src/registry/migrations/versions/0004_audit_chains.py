"""audit_entries, audit_heads, audit_checkpoints, audit_checkpoint_heads: the registry's audit chains

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 19:00:00

One hash chain per licensee (the licensee, its licenses, its models), appended in the transaction
of each change, and signed checkpoints over every chain's head (rescind_common.audit_chain,
docs/adr/0007-signed-audit-checkpoints.md). Chains start at the first change after this migration.
"""

from collections.abc import Sequence

from rescind_common.migrations import create_audit_chain_tables, create_audit_checkpoint_tables, drop_audit_tables

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_chain_tables()
    create_audit_checkpoint_tables()


def downgrade() -> None:
    drop_audit_tables(chains=True)
