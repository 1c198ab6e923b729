"""The sweeper's passes: each owns its transactions and calls the notices' service for the work of
one transaction. The runner runs them every `worker_sweep_interval_seconds`; the recorder runs
`dead_letter_disabled` for the endpoints it has just disabled."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rescind_common.db import utcnow
from revocation_worker.context import AppContext
from revocation_worker.delivery import dead_letter_repository as dead_letter_repo
from revocation_worker.notices import repository as notices_repo
from revocation_worker.notices import service as notices
from revocation_worker.policy.rules import UNANSWERED


def dead_letter_disabled(ctx: AppContext, endpoint_ids: Sequence[str] | None = None, batch: int = 500) -> int:
    """Dead-letter the pending deliveries to disabled endpoints (these, or all): the loop never
    claims them, so pending they would wait forever, out of the operator's dead-letter backlog.
    Rows someone else holds (an attempt in flight, a recorder, an acknowledgement) are skipped: the
    recorder dead-letters a failed attempt to a disabled endpoint itself, and the periodic sweep
    comes back for the rest. Returns the deliveries dead-lettered."""
    done = 0
    while True:
        with ctx.session_factory() as session:  # a read first: nothing to do commits nothing
            if not dead_letter_repo.pending_to_disabled(session, utcnow(), endpoint_ids, 1):
                return done
        with ctx.session_factory() as session, session.begin():
            found, dead = notices.dead_letter_to_disabled(session, ctx, endpoint_ids, batch, utcnow())
        done += dead
        if found < batch or not dead:
            return done  # the rest (if any) is held by others: the next sweep


def sweep_overdue(ctx: AppContext, limit: int = 500, now: dt.datetime | None = None) -> int:
    """Notices past their deadline without a complete answer turn overdue (and their licensee gets
    a `revocation.overdue` webhook), one transaction each. `now`: the sweep's clock (tests)."""
    now = now or utcnow()
    with ctx.session_factory() as session:
        ids = notices_repo.overdue_candidates(session, now, limit)
    done = 0
    for notice_id in ids:
        with ctx.session_factory() as session, session.begin():
            done += notices.mark_overdue(session, ctx, notice_id, now)
    return done


def sweep_reminders(ctx: AppContext, limit: int = 500, now: dt.datetime | None = None) -> int:
    """Unanswered notices nearing their deadline get their `revocation.reminder` webhook, one
    transaction each; returns how many were reminded. `now`: the sweep's clock (tests)."""
    now = now or utcnow()
    before = ctx.settings.worker_reminder_before_seconds
    with ctx.session_factory() as session:
        ids = notices_repo.reminder_candidates(session, now, before, UNANSWERED, limit)
    done = 0
    for notice_id in ids:
        with ctx.session_factory() as session, session.begin():
            done += notices.remind(session, ctx, notice_id, now)
    return done
