"""Ready revocations -> notices: ask the registry who holds the samples, make one notice per licensee.

Runs in the worker loop. The registry being down only delays notices: a failed lookup is retried
with backoff, forever, and never dead-lettered (a revocation must reach its holders).

Then the rechecks (`recheck_due`): licensees the registry reported, after the fact, as having lost
samples to a revocation (its LicenseSamplesWithdrawn on the license topic). A license recorded
between the revocation and the registry's projection applying it was accepted (the projection
still said "active") and may have missed the revocation's holders lookup; asking again once the
revocation is resolved finds it, and its licensee gets the notice the others got, with the same
deadline. One notice per revocation x licensee, never two.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.db import UTCDateTime, utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.context import AppContext
from revocation_worker.events import outbox_row
from revocation_worker.intake import repository as intake_repo
from revocation_worker.intake.holdings import HeldLicense, HeldModel, Holdings, HoldingsMerger
from revocation_worker.intake.models import Revocation, RevocationPart
from revocation_worker.notices import repository as notices_repo
from revocation_worker.notices import service as notices
from revocation_worker.notices.service import HolderNotice, RevocationSamples

log = logging.getLogger(__name__)

HOLDERS_BATCH = 10_000
# Revocations claimed per pass, and how long a claim hides them from other resolvers (longer
# than a holders lookup may take: the registry client's timeout is 30 s).
BATCH = 200
CLAIM_LEASE = dt.timedelta(seconds=60)


class RegistryClient:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._client = httpx.Client(base_url=ctx.settings.worker_registry_url, timeout=30)
        self._token: str | None = ctx.settings.worker_registry_token
        self._minted_at: dt.datetime | None = None

    def _auth(self) -> dict[str, str]:
        s = self.ctx.settings
        if s.worker_registry_token:
            return {"Authorization": f"Bearer {s.worker_registry_token}"}
        now = utcnow()
        if self._token is None or self._minted_at is None or now - self._minted_at > dt.timedelta(minutes=30):
            key = ensure_dev_key(s.dev_auth_key_file)
            self._token = mint_token(
                key,
                sub="revocation-worker",
                role="operator",
                issuer=s.auth_issuer,
                audience=s.auth_audience,
                ttl=dt.timedelta(hours=1),
            )
            self._minted_at = now
        return {"Authorization": f"Bearer {self._token}"}

    def holders(self, sample_ids: list[str]) -> Holdings:
        """The registry's `licenses` view for every batch, merged: per license a count, sample lists
        only for licenses holding part of a batch, each sample's ref once."""
        merger = HoldingsMerger()
        for i in range(0, len(sample_ids), HOLDERS_BATCH):
            batch = sample_ids[i : i + HOLDERS_BATCH]
            r = self._client.post(
                "/v1/holders", json={"sample_ids": batch, "view": "licenses"}, headers=self._auth()
            )
            r.raise_for_status()
            merger.add(batch, r.json())
        return merger.result()

    def close(self) -> None:
        self._client.close()


_REVOCATIONS = cast(Table, Revocation.__table__)
# The claim's statements, built once (Core, bound per call): the resolver claims on every pass.
_DUE = (
    select(_REVOCATIONS.c.id)
    .where(
        _REVOCATIONS.c.state == "ready",
        _REVOCATIONS.c.next_resolve_at <= bindparam("now", type_=UTCDateTime()),
    )
    .order_by(_REVOCATIONS.c.next_resolve_at)
    .limit(bindparam("limit"))
)
_DUE_SKIP_LOCKED = _DUE.with_for_update(skip_locked=True)
_HIDE = (
    update(_REVOCATIONS)
    .where(_REVOCATIONS.c.id.in_(bindparam("ids", expanding=True)))
    .values(next_resolve_at=bindparam("until", type_=UTCDateTime()))
)


def due(session: Session, now: dt.datetime, limit: int, *, skip_locked: bool = False) -> list[str]:
    stmt = _DUE_SKIP_LOCKED if skip_locked else _DUE
    return [str(i) for i in session.connection().execute(stmt, {"now": now, "limit": limit}).scalars()]


def claim(session: Session, now: dt.datetime, limit: int, lease: dt.timedelta) -> list[str]:
    """Take up to `limit` due revocations for `lease`, in the caller's transaction.

    On PostgreSQL rows another resolver is claiming right now are skipped (SKIP LOCKED), and
    moving next_resolve_at past the lease hides the claimed rows from every other resolver until
    it ends (a crashed resolver's claims come back then). On SQLite, BEGIN IMMEDIATE serialises
    claims. The lease only saves duplicate work: notices are made under a row lock that re-checks
    the state, so a revocation whose lease ran out is still never resolved twice."""
    ids = due(session, now, limit, skip_locked=True)
    if ids:
        session.connection().execute(_HIDE, {"ids": ids, "until": now + lease})
    return ids


@dataclass(frozen=True)
class Withdrawal:
    """What one consent's part of a revocation withdraws."""

    consent_id: str
    samples: frozenset[str]
    purposes: frozenset[str]
    only_licensee_id: str | None


class PartLike(Protocol):
    """What merging reads of a revocation part: a `RevocationPart` or a plain row."""

    @property
    def revocation_id(self) -> str: ...
    @property
    def consent_id(self) -> str: ...
    @property
    def sample_ids(self) -> list[str]: ...
    @property
    def purposes(self) -> list[str]: ...
    @property
    def only_licensee_id(self) -> str | None: ...


_PARTS = cast(Table, RevocationPart.__table__)
_PARTS_OF = select(
    _PARTS.c.revocation_id,
    _PARTS.c.consent_id,
    _PARTS.c.sample_ids,
    _PARTS.c.purposes,
    _PARTS.c.only_licensee_id,
).where(_PARTS.c.revocation_id.in_(bindparam("ids", expanding=True)))


def parts_of_many(session: Session, revocation_ids: Sequence[str]) -> dict[str, list[PartLike]]:
    """Every revocation's parts as plain rows (no ORM objects), one query per 900 revocations
    (none for a revocation without)."""
    parts: dict[str, list[PartLike]] = {rid: [] for rid in revocation_ids}
    ids = sorted(set(revocation_ids))
    conn = session.connection()
    for i in range(0, len(ids), 900):
        for part in conn.execute(_PARTS_OF, {"ids": ids[i : i + 900]}):
            parts[part.revocation_id].append(part)
    return parts


def merge_parts(parts: Sequence[PartLike]) -> list[Withdrawal]:
    merged: dict[str, tuple[set[str], set[str], str | None]] = {}
    for part in parts:
        samples, purposes, _ = merged.setdefault(part.consent_id, (set(), set(), part.only_licensee_id))
        samples.update(part.sample_ids)
        purposes.update(part.purposes)
    return [Withdrawal(cid, frozenset(s), frozenset(p), only) for cid, (s, p, only) in sorted(merged.items())]


def affected(holdings: Holdings, withdrawals: list[Withdrawal]) -> list[HolderNotice]:
    """Keep only what this revocation withdrew: a licensee is told about a sample only when it holds
    it under a license whose consent is withdrawn for that license's purpose (and for that licensee,
    when only one was withdrawn); a licensee holding it under ANOTHER consent, for a purpose still
    consented, or not the one withdrawn is not told. Models: those of the licenses hit.

    A license holding every requested sample is hit by the withdrawals' own sample sets, shared by
    every such licensee (and by the revocation's RevocationSamples): a fan-out to 100 licensees of
    10,000 samples holds 10,000 ids once, not 1,000,000."""
    by_consent: dict[str, list[int]] = {}
    for i, w in enumerate(withdrawals):
        by_consent.setdefault(w.consent_id, []).append(i)
    whole_cache: dict[tuple[int, ...], frozenset[str]] = {}

    def whole(index: tuple[int, ...]) -> frozenset[str]:
        """The requested samples these withdrawals withdraw (memoised: shared between licensees)."""
        got = whole_cache.get(index)
        if got is None:
            if len(index) == 1:
                got = withdrawals[index[0]].samples
            else:
                got = frozenset().union(*(withdrawals[i].samples for i in index))
            if not got <= holdings.requested:
                got = got & holdings.requested
            whole_cache[index] = got
        return got

    # licensee -> (hit sample sets with the withdrawals when whole, hit license ids)
    hits: dict[str, tuple[list[tuple[Set[str], tuple[int, ...] | None]], list[str]]] = {}
    for license_id in sorted(holdings.licenses):
        lic = holdings.licenses[license_id]
        index = tuple(
            i
            for i in by_consent.get(lic.consent_id, [])
            if lic.purpose in withdrawals[i].purposes
            and withdrawals[i].only_licensee_id in (None, lic.licensee_id)
        )
        if not index:
            continue
        pool = whole(index)
        if lic.sample_ids is None:
            part: tuple[Set[str], tuple[int, ...] | None] = (pool, index)
        else:
            part = ({s for s in lic.sample_ids if s in pool}, None)
        if part[0]:
            parts, license_ids = hits.setdefault(lic.licensee_id, ([], []))
            parts.append(part)
            license_ids.append(license_id)

    per_licensee: dict[str, Set[str]] = {}
    for licensee_id, (parts, _) in hits.items():
        if len(parts) == 1:
            per_licensee[licensee_id] = parts[0][0]
        elif all(index is not None for _, index in parts):
            per_licensee[licensee_id] = whole(tuple(sorted({i for _, index in parts for i in index or ()})))
        else:
            per_licensee[licensee_id] = set().union(*(sample_set for sample_set, _ in parts))
    # The revocation's sample set: the largest licensee set when it contains the others (the usual
    # fan-out: the withdrawal itself, by reference), else their union.
    distinct = sorted({id(s): s for s in per_licensee.values()}.values(), key=len, reverse=True)
    everything: Set[str] = distinct[0] if distinct else frozenset()
    if any(not s <= everything for s in distinct[1:]):
        everything = frozenset().union(*distinct)
    shared = RevocationSamples(everything, {sid: holdings.ref(sid) for sid in everything})

    models_of: dict[str, list[HeldModel]] = {}
    for model_id in sorted(holdings.models):
        model = holdings.models[model_id]
        models_of.setdefault(model.licensee_id, []).append(model)
    out: list[HolderNotice] = []
    for licensee_id in sorted(per_licensee):
        license_ids = hits[licensee_id][1]
        out.append(
            {
                "licensee_id": licensee_id,
                "sample_ids": per_licensee[licensee_id],
                "revocation_samples": shared,
                "license_ids": license_ids,
                "models": [
                    {
                        "model_id": m.model_id,
                        "name": m.name,
                        "version": m.version,
                        "shard_ids": sorted(m.shard_ids),
                    }
                    for m in models_of.get(licensee_id, [])
                    if not m.license_ids.isdisjoint(license_ids)
                ],
            }
        )
    return out


@dataclass(frozen=True)
class _Pending:
    """A claimed revocation on its way to notices."""

    id: str
    withdrawals: list[Withdrawal]
    samples: list[str]


def resolve_due(
    ctx: AppContext, registry: RegistryClient, limit: int = BATCH, *, lease: dt.timedelta = CLAIM_LEASE
) -> int:
    """Resolve up to `limit` due revocations in batches; returns how many this call resolved.

    Per batch: one claim, one query for the parts, one holders lookup for the union of their
    samples, then every notice and RevocationResolved event in one transaction. A revocation that
    cannot be resolved now (registry down, bad data) is retried later with backoff, never lost,
    and never holds back the others."""
    with ctx.session_factory() as session, session.begin():
        ids = claim(session, utcnow(), limit, lease)
        parts = parts_of_many(session, ids) if ids else {}
    if not ids:
        return 0
    failed: dict[str, str] = {}
    pending: list[_Pending] = []
    for rid in ids:
        try:
            ws = merge_parts(parts[rid])
            pending.append(_Pending(rid, ws, sorted({s for w in ws for s in w.samples})))
        except (TypeError, ValueError, AttributeError) as exc:  # a malformed part
            failed[rid] = f"bad revocation parts: {type(exc).__name__}: {exc}"
    done = 0
    for group in _groups(pending):
        told, lookup_failed = _holders_for(registry, group)
        failed.update(lookup_failed)
        if told:
            resolved, commit_failed = _commit(ctx, told)
            done += resolved
            failed.update(commit_failed)
    _retry_later(ctx, failed)
    return done


def _groups(pending: list[_Pending]) -> Iterator[list[_Pending]]:
    """Revocations in lookup groups of at most HOLDERS_BATCH samples in all (a bigger revocation
    goes alone), so one batch never holds more than about one lookup's worth of holdings."""
    group: list[_Pending] = []
    size = 0
    for p in pending:
        if group and size + len(p.samples) > HOLDERS_BATCH:
            yield group
            group, size = [], 0
        group.append(p)
        size += len(p.samples)
    if group:
        yield group


# Answers that blame the request (a malformed sample id), not the registry: worth splitting the batch.
_BAD_REQUEST = frozenset({400, 413, 422})


def _holders_for(
    registry: RegistryClient, group: list[_Pending]
) -> tuple[dict[str, list[HolderNotice]], dict[str, str]]:
    """One holders lookup for the union of the group's samples, then each revocation's own
    holders (`affected`). Returns (holders to tell per revocation, error per revocation to retry)."""
    samples = sorted({s for p in group for s in p.samples})
    try:
        raw = registry.holders(samples) if samples else Holdings()
        narrow = _narrower(raw) if len(group) > 1 else None
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


def _narrower(raw: Holdings) -> Callable[[list[str]], tuple[Holdings, bool]]:
    """The shared answer cut down to one revocation's samples: only the licenses holding some of
    them and their models (what `affected` keeps is the same; its cost no longer grows with the
    size of the batch). Also True when a sharded model of those licenses is linked to licenses
    outside them: its shard ids may then be wider than this revocation's own lookup would give."""
    whole = [lic for lic in raw.licenses.values() if lic.sample_ids is None]
    by_sample: dict[str, list[HeldLicense]] = {}
    for lic in raw.licenses.values():
        for sid in lic.sample_ids or ():
            by_sample.setdefault(sid, []).append(lic)
    models_by_license: dict[str, list[HeldModel]] = {}
    for model in raw.models.values():
        for license_id in model.license_ids:
            models_by_license.setdefault(license_id, []).append(model)

    def narrow(samples: list[str]) -> tuple[Holdings, bool]:
        wanted = frozenset(samples)
        held: dict[str, set[str]] = {}
        for sid in samples:
            for lic in by_sample.get(sid, []):
                held.setdefault(lic.license_id, set()).add(sid)
        licenses = {lic.license_id: lic for lic in whole}
        for license_id, sids in held.items():
            lic = raw.licenses[license_id]
            licenses[license_id] = HeldLicense(
                license_id=lic.license_id,
                licensee_id=lic.licensee_id,
                licensee_name=lic.licensee_name,
                status=lic.status,
                consent_id=lic.consent_id,
                purpose=lic.purpose,
                sample_ids=None if sids == wanted else sids,
            )
        models = {m.model_id: m for lid in licenses for m in models_by_license.get(lid, [])}
        widened = any(m.shard_ids and not m.license_ids <= licenses.keys() for m in models.values())
        return Holdings(requested=wanted, licenses=licenses, refs=raw.refs, models=models), widened

    return narrow


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


# Resolve the ready ones of these revocations (their rows locked in id order, so that resolvers
# never deadlock) and return what their notices need, in one statement: a revocation no longer
# ready was resolved by another resolver whose lease had outlived ours. On SQLite (no FOR UPDATE)
# BEGIN IMMEDIATE serialises writers instead.
_RESOLVE = (
    update(_REVOCATIONS)
    .where(
        _REVOCATIONS.c.id.in_(
            select(_REVOCATIONS.c.id)
            .where(_REVOCATIONS.c.id.in_(bindparam("ids", expanding=True)), _REVOCATIONS.c.state == "ready")
            .order_by(_REVOCATIONS.c.id)
            .with_for_update()
            .scalar_subquery()
        )
    )
    .values(state="resolved", resolved_at=bindparam("now"))
    .returning(_REVOCATIONS.c.id, _REVOCATIONS.c.subject_id, _REVOCATIONS.c.occurred_at)
)


def _create_notices(ctx: AppContext, told: dict[str, list[HolderNotice]]) -> int:
    with ctx.session_factory() as session, session.begin():
        now = utcnow()
        revocations = sorted(
            session.connection().execute(_RESOLVE, {"ids": sorted(told), "now": now}), key=lambda r: r.id
        )
        if not revocations:
            return 0
        # Every notice, then each revocation's RevocationResolved event (one outbox INSERT for all).
        resolved = [
            outbox_row(
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
        for revocation in session.scalars(
            select(Revocation)
            .where(Revocation.id.in_(sorted(errors)), Revocation.state == "ready")
            .order_by(Revocation.id)
            .with_for_update()
        ):
            revocation.resolve_attempts += 1
            delay = min(60.0, 0.5 * 2 ** min(revocation.resolve_attempts, 10)) * (1 + random.random() * 0.2)
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
        parts = parts_of_many(session, sorted(wanted)) if wanted else {}
    failed: dict[tuple[str, str], str] = {}

    def fail(rid: str, error: str) -> None:
        failed.update(dict.fromkeys(((rid, lic) for lic in wanted[rid]), error))

    pending: list[_Pending] = []
    for rid in sorted(wanted):
        try:
            ws = merge_parts(parts[rid])
            pending.append(_Pending(rid, ws, sorted({s for w in ws for s in w.samples})))
        except (TypeError, ValueError, AttributeError) as exc:  # a malformed part
            fail(rid, f"bad revocation parts: {type(exc).__name__}: {exc}")
    made = 0
    # The database going away raises out of here: the claims' lease brings the rechecks back.
    for group in _groups(pending):
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
            delay = min(60.0, 0.5 * 2 ** min(attempts, 10)) * (1 + random.random() * 0.2)
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
