"""Ready revocations -> notices: ask the registry who holds the samples, make one notice per licensee.

Runs in the worker loop. The registry being down only delays notices: a failed lookup is retried
with backoff, forever, and never dead-lettered (a revocation must reach its holders).

Then the rechecks (`recheck_due`): licensees the registry reported, after the fact, as having lost
samples to a revocation (its LicenseSamplesWithdrawn on the license topic). A license recorded
between the revocation and the registry's projection applying it was accepted (the projection
still said "active") and may have missed the revocation's holders lookup; asking again once the
revocation is resolved finds it, and its licensee gets the notice the others got, with the same
deadline. One notice per revocation x licensee, never two.

This module is the orchestration: each pass owns its transactions (a claim; the HTTP lookup
outside any; the notices; the backoff). The queries are in `intake/repository.py`, the registry
client in `intake/registry_client.py`, the decisions in `intake/rules.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.context import AppContext
from revocation_worker.events import notice_event_row
from revocation_worker.intake import repository as intake_repo
from revocation_worker.intake.holdings import Holdings
from revocation_worker.intake.registry_client import HOLDERS_BATCH, RegistryClient
from revocation_worker.intake.rules import (
    Pending,
    Withdrawal,
    affected,
    groups,
    narrower,
    pending_of,
    retry_delay,
)
from revocation_worker.notices import repository as notices_repo
from revocation_worker.notices import service as notices
from revocation_worker.notices.service import HolderNotice

# Re-exported: what callers (the runner, tests, benchmarks) import from here.
__all__ = [
    "HOLDERS_BATCH",
    "Rechecked",
    "RegistryClient",
    "Withdrawal",
    "affected",
    "recheck_due",
    "resolve_due",
]

log = logging.getLogger(__name__)

# Revocations claimed per pass, and how long a claim hides them from other resolvers (longer
# than a holders lookup may take: the registry client's timeout).
BATCH = 200
CLAIM_LEASE = dt.timedelta(seconds=60)


def resolve_due(
    ctx: AppContext, registry: RegistryClient, limit: int = BATCH, *, lease: dt.timedelta = CLAIM_LEASE
) -> int:
    """Resolve up to `limit` due revocations in batches; returns how many this call resolved.

    Per batch: one claim, one query for the parts, one holders lookup for the union of their
    samples, then every notice and RevocationResolved event in one transaction. A revocation that
    cannot be resolved now (registry down, bad data) is retried later with backoff, never lost,
    and never holds back the others."""
    with ctx.session_factory() as session, session.begin():
        ids = intake_repo.claim(session, utcnow(), limit, lease)
        parts = intake_repo.parts_of_many(session, ids) if ids else {}
    if not ids:
        return 0
    failed: dict[str, str] = {}
    pending: list[Pending] = []
    for rid in ids:
        try:
            pending.append(pending_of(rid, parts[rid]))
        except (TypeError, ValueError, AttributeError) as exc:  # a malformed part
            failed[rid] = f"bad revocation parts: {type(exc).__name__}: {exc}"
    done = 0
    for group in groups(pending, HOLDERS_BATCH):
        told, lookup_failed = _holders_for(registry, group)
        failed.update(lookup_failed)
        if told:
            resolved, commit_failed = _commit(ctx, told)
            done += resolved
            failed.update(commit_failed)
    _retry_later(ctx, failed)
    return done


# Answers that blame the request (a malformed sample id), not the registry: worth splitting the batch.
_BAD_REQUEST = frozenset({400, 413, 422})


def _holders_for(
    registry: RegistryClient, group: list[Pending]
) -> tuple[dict[str, list[HolderNotice]], dict[str, str]]:
    """One holders lookup for the union of the group's samples, then each revocation's own
    holders (`affected`). Returns (holders to tell per revocation, error per revocation to retry)."""
    samples = sorted({s for p in group for s in p.samples})
    try:
        raw = registry.holders(samples) if samples else Holdings()
        narrow = narrower(raw) if len(group) > 1 else None
    except httpx.HTTPStatusError as exc:
        if len(group) > 1 and exc.response.status_code in _BAD_REQUEST:
            # One revocation's bad sample id must not hold back the rest: halve until it is alone.
            mid = len(group) // 2
            told_a, failed_a = _holders_for(registry, group[:mid])
            told_b, failed_b = _holders_for(registry, group[mid:])
            return told_a | told_b, failed_a | failed_b
        return {}, dict.fromkeys((p.id for p in group), _describe(exc))
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:  # or a malformed answer
        return {}, dict.fromkeys((p.id for p in group), _describe(exc))
    told: dict[str, list[HolderNotice]] = {}
    failed: dict[str, str] = {}
    for p in group:
        try:
            if narrow is None:
                holders = affected(raw, p.withdrawals)
            else:
                own, widened = narrow(p.samples)
                if widened:
                    # A sharded model's shard ids in the shared answer may include shards of licenses
                    # this revocation does not touch: asked alone, its notice names exactly its shards.
                    again, err = _holders_for(registry, [p])
                    told.update(again)
                    failed.update(err)
                    continue
                holders = affected(own, p.withdrawals)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a malformed answer or part
            failed[p.id] = _describe(exc)
            continue
        told[p.id] = holders
    return told, failed


# The database itself failing is not one revocation's fault: give up the pass (the claims'
# lease brings the revocations back) instead of trying each revocation alone.
_DATABASE_DOWN = (OperationalError, InterfaceError)


Create = Callable[[AppContext, dict[str, list[HolderNotice]]], int]


def _commit(
    ctx: AppContext, told: dict[str, list[HolderNotice]], create: Create | None = None
) -> tuple[int, dict[str, str]]:
    """Notices for every revocation of `told` in one transaction (`create`: a resolution's, by
    default); when that fails (one malformed revocation), each revocation in its own transaction,
    so the others still go through."""
    create = create or _create_notices
    try:
        return create(ctx, told), {}
    except _DATABASE_DOWN:
        raise
    except Exception as exc:
        if len(told) == 1:
            return 0, dict.fromkeys(told, _describe(exc))
        log.warning("batch of %d revocations failed (%s); resolving each alone", len(told), _describe(exc))
    done = 0
    failed: dict[str, str] = {}
    for rid, holders in told.items():
        try:
            done += create(ctx, {rid: holders})
        except _DATABASE_DOWN:
            raise
        except Exception as exc:
            failed[rid] = _describe(exc)
    return done, failed


def _create_notices(ctx: AppContext, told: dict[str, list[HolderNotice]]) -> int:
    with ctx.session_factory() as session, session.begin():
        now = utcnow()
        revocations = intake_repo.resolve(session, sorted(told), now)
        if not revocations:
            return 0
        # Every notice, then each revocation's RevocationResolved event (one outbox INSERT for all).
        resolved = [
            notice_event_row(
                ctx.settings,
                licensee_id="",
                key=r.id,
                revocation_id=r.id,
                subject_id=r.subject_id,
                revocation_resolved=pb.RevocationResolved(
                    notice_count=len(told[r.id]),
                    licensee_ids=sorted(str(h["licensee_id"]) for h in told[r.id]),
                ),
            )
            for r in revocations
        ]
        notices.create_many(session, ctx, [(r, told[r.id]) for r in revocations], now, events=resolved)
    for r in revocations:
        log.info("revocation %s resolved: %d licensee(s) to notify", r.id, len(told[r.id]))
    return len(revocations)


def _describe(exc: BaseException) -> str:
    """Short and free of row data (a database error's text would quote every parameter)."""
    orig = getattr(exc, "orig", None)
    if isinstance(exc, SQLAlchemyError) and orig is not None:
        return f"{type(orig).__name__}: {str(orig).splitlines()[0] if str(orig) else ''}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def _retry_later(ctx: AppContext, errors: dict[str, str]) -> None:
    """Back off each revocation that could not be resolved now (by its own attempt count)."""
    if not errors:
        return
    delays: list[float] = []
    with ctx.session_factory() as session, session.begin():
        now = utcnow()
        for revocation in intake_repo.lock_ready(session, sorted(errors)):
            revocation.resolve_attempts += 1
            delay = retry_delay(revocation.resolve_attempts)
            revocation.next_resolve_at = now + dt.timedelta(seconds=delay)
            revocation.last_error = errors[revocation.id][:500]
            delays.append(delay)
    by_error: dict[str, list[str]] = {}
    for rid, error in errors.items():
        by_error.setdefault(error, []).append(rid)
    for error, rids in by_error.items():
        log.warning(
            "%d revocation(s) not resolved (%s), e.g. %s; retrying in %.1f-%.1fs",
            len(rids),
            error,
            ", ".join(sorted(rids)[:3]),
            min(delays, default=0.0),
            max(delays, default=0.0),
        )


# -- rechecks: licensees the registry reports after their revocation was resolved -------------------


@dataclass(frozen=True)
class Rechecked:
    """What one `recheck_due` did: rechecks claimed, notices made."""

    claimed: int
    notices: int


def recheck_due(
    ctx: AppContext, registry: RegistryClient, limit: int = BATCH, *, lease: dt.timedelta = CLAIM_LEASE
) -> Rechecked:
    """Settle up to `limit` due rechecks of resolved revocations (a recheck of a revocation not
    resolved yet waits: its resolution's lookup will find the license).

    A licensee with a notice for the revocation already is done (the usual case: the license was
    there at the first lookup). For the others, per batch of revocations: one holders lookup for
    their samples, the same `affected` as a resolution, and in one transaction, under the
    revocations' row locks (as a resolution takes them), a notice with its NoticeCreated event and
    deliveries for each named licensee still without one. A licensee the lookup does not show
    holding what the revocation withdrew is dropped with a warning. A failed lookup or write backs
    the rechecks off, never drops them."""
    with ctx.session_factory() as session, session.begin():
        claimed = intake_repo.claim_rechecks(session, utcnow(), limit, lease)
        if not claimed:
            return Rechecked(0, 0)
        already = notices_repo.told(session, sorted({rid for rid, _ in claimed}))
        intake_repo.drop_rechecks(session, [p for p in claimed if p in already])
        wanted: dict[str, set[str]] = {}
        for rid, licensee_id in claimed:
            if (rid, licensee_id) not in already:
                wanted.setdefault(rid, set()).add(licensee_id)
        parts = intake_repo.parts_of_many(session, sorted(wanted)) if wanted else {}
    failed: dict[tuple[str, str], str] = {}

    def fail(rid: str, error: str) -> None:
        failed.update(dict.fromkeys(((rid, lic) for lic in wanted[rid]), error))

    pending: list[Pending] = []
    for rid in sorted(wanted):
        try:
            pending.append(pending_of(rid, parts[rid]))
        except (TypeError, ValueError, AttributeError) as exc:  # a malformed part
            fail(rid, f"bad revocation parts: {type(exc).__name__}: {exc}")
    made = 0
    # The database going away raises out of here: the claims' lease brings the rechecks back.
    for group in groups(pending, HOLDERS_BATCH):
        told, lookup_failed = _holders_for(registry, group)
        for rid, error in lookup_failed.items():
            fail(rid, error)
        if told:
            done, commit_failed = _commit(ctx, told, lambda c, t: _create_late_notices(c, t, wanted))
            made += done
            for rid, error in commit_failed.items():
                fail(rid, error)
    _recheck_later(ctx, failed)
    return Rechecked(len(claimed), made)


def _create_late_notices(
    ctx: AppContext, told: dict[str, list[HolderNotice]], wanted: dict[str, set[str]]
) -> int:
    """The notices of the rechecked licensees of these revocations that have none yet, and their
    rechecks dropped, in one transaction; returns the notices made."""
    with ctx.session_factory() as session, session.begin():
        now = utcnow()
        revocations = intake_repo.lock_resolved(session, sorted(told))
        if not revocations:
            return 0
        # Read under the lock: a notice made meanwhile (another resolver) is seen, never doubled.
        existing = notices_repo.told(session, [r.id for r in revocations])
        items: list[tuple[Any, list[HolderNotice]]] = []
        settled: list[tuple[str, str]] = []
        strays: list[tuple[str, str]] = []
        for r in revocations:
            holders = {str(h["licensee_id"]): h for h in told[r.id]}
            new = [
                holders[lic] for lic in sorted(wanted[r.id]) if lic in holders and (r.id, lic) not in existing
            ]
            items.append((r, new))
            settled += [(r.id, lic) for lic in sorted(wanted[r.id])]
            strays += [(r.id, lic) for lic in sorted(wanted[r.id]) if lic not in holders]
        made = notices.create_many(session, ctx, items, now)
        intake_repo.drop_rechecks(session, settled)
    for r, new in items:
        if new:
            log.info(
                "revocation %s: %d licensee(s) found after its resolution told (%s)",
                r.id,
                len(new),
                ", ".join(str(h["licensee_id"]) for h in new),
            )
    for rid, lic in strays:
        log.warning(
            "revocation %s: the registry reported licensee %s losing samples to it, but the holders "
            "lookup shows it holding none of what it withdrew; no notice made",
            rid,
            lic,
        )
    return len(made)


def _recheck_later(ctx: AppContext, errors: dict[tuple[str, str], str]) -> None:
    """Back off each recheck that could not be settled now (by its own attempt count)."""
    if not errors:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = []
    with ctx.session_factory() as session, session.begin():
        for row in intake_repo.lock_rechecks(session, sorted(errors)):
            attempts = int(row.attempts) + 1
            delay = retry_delay(attempts)
            rows.append(
                {
                    "b_revocation_id": row.revocation_id,
                    "b_licensee_id": row.licensee_id,
                    "b_attempts": attempts,
                    "b_next_check_at": now + dt.timedelta(seconds=delay),
                    "b_last_error": errors[(row.revocation_id, row.licensee_id)][:500],
                }
            )
        intake_repo.back_off_rechecks(session, rows)
    by_error: dict[str, list[str]] = {}
    for (rid, lic), error in errors.items():
        by_error.setdefault(error, []).append(f"{rid}/{lic}")
    for error, keys in by_error.items():
        log.warning(
            "%d recheck(s) not settled (%s), e.g. %s; retrying with backoff",
            len(keys),
            error,
            ", ".join(sorted(keys)[:3]),
        )
