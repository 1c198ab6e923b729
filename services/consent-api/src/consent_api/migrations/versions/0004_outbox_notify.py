"""outbox: NOTIFY rescind_outbox when rows are inserted, so the relay wakes on commit

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00

A statement trigger rather than a NOTIFY from each writer: every way a row gets into the outbox
(ORM adds, Core inserts, inserts folded into another statement's CTEs, an operator's SQL) is
covered, and the writers need not know. PostgreSQL sends the notification on commit only and once
per transaction however many statements fired it. The channel is rescind_common.outbox's
OUTBOX_CHANNEL. SQLite has no NOTIFY: nothing to do there (its relay polls).

PostgreSQL serialises the commits of notifying transactions (a lock held through the commit's WAL
flush): a database that must take more outbox-writing commits a second than that allows can turn
the NOTIFY off with `ALTER DATABASE ... SET rescind.outbox_notify = off` and let the relays poll
(RESCIND_OUTBOX_FALLBACK_POLL_SECONDS=0.05).
"""

from collections.abc import Sequence

from rescind_common.migrations import create_outbox_notify_trigger, drop_outbox_notify_trigger

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_notify_trigger()


def downgrade() -> None:
    drop_outbox_notify_trigger()
