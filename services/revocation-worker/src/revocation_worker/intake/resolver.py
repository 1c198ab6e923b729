"""Ready revocations -> notices: ask the registry who holds the samples, make one notice per licensee.

Runs in the worker loop. The registry being down only delays notices: a failed lookup is retried
with backoff, forever, and never dead-lettered (a revocation must reach its holders).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Set
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.context import AppContext
from revocation_worker.events import publish
from revocation_worker.intake.holdings import HeldModel, Holdings, HoldingsMerger
from revocation_worker.intake.models import Revocation, RevocationPart
from revocation_worker.notices import service as notices
from revocation_worker.notices.service import HolderNotice, RevocationSamples

log = logging.getLogger(__name__)

HOLDERS_BATCH = 10_000


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


def due(session: Session, now: dt.datetime, limit: int) -> list[str]:
    return list(
        session.scalars(
            select(Revocation.id)
            .where(Revocation.state == "ready", Revocation.next_resolve_at <= now)
            .order_by(Revocation.next_resolve_at)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class Withdrawal:
    """What one consent's part of a revocation withdraws."""

    consent_id: str
    samples: frozenset[str]
    purposes: frozenset[str]
    only_licensee_id: str | None


def withdrawals_of(session: Session, revocation_id: str) -> list[Withdrawal]:
    merged: dict[str, tuple[set[str], set[str], str | None]] = {}
    for part in session.scalars(select(RevocationPart).where(RevocationPart.revocation_id == revocation_id)):
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


def resolve_due(ctx: AppContext, registry: RegistryClient, limit: int = 50) -> int:
    with ctx.session_factory() as session:
        ids = due(session, utcnow(), limit)
    done = 0
    for revocation_id in ids:
        with ctx.session_factory() as session:
            withdrawals = withdrawals_of(session, revocation_id)
        samples = sorted({s for w in withdrawals for s in w.samples})
        try:
            raw = registry.holders(samples) if samples else Holdings()
            holders = affected(raw, withdrawals)
            log.info(
                "revocation %s: %d sample(s), %d licensee(s) hold some, %d hold what it withdrew",
                revocation_id,
                len(samples),
                len(raw),
                len(holders),
            )

        except (httpx.HTTPError, ValueError, KeyError) as exc:
            _retry_later(ctx, revocation_id, f"{type(exc).__name__}: {exc}")
            continue
        with ctx.session_factory() as session, session.begin():
            revocation = session.get(Revocation, revocation_id, with_for_update=True)
            if revocation is None or revocation.state != "ready":
                continue  # another worker got there first
            now = utcnow()
            for holder in holders:
                notices.create_for_holder(session, ctx, revocation, holder, now)
            publish(
                session,
                ctx.settings,
                licensee_id="",
                key=revocation.id,
                revocation_id=revocation.id,
                subject_id=revocation.subject_id,
                revocation_resolved=pb.RevocationResolved(
                    notice_count=len(holders), licensee_ids=sorted(h["licensee_id"] for h in holders)
                ),
            )
            revocation.state = "resolved"
            revocation.resolved_at = now
            done += 1
            log.info("revocation %s resolved: %d licensee(s) to notify", revocation_id, len(holders))
    return done


def _retry_later(ctx: AppContext, revocation_id: str, error: str) -> None:
    with ctx.session_factory() as session, session.begin():
        revocation = session.get(Revocation, revocation_id, with_for_update=True)
        if revocation is None:
            return
        revocation.resolve_attempts += 1
        delay = min(60.0, 0.5 * 2 ** min(revocation.resolve_attempts, 10)) * (1 + random.random() * 0.2)
        revocation.next_resolve_at = utcnow() + dt.timedelta(seconds=delay)
        revocation.last_error = error[:500]
    log.warning("holders lookup for %s failed (%s); retrying in %.1fs", revocation_id, error, delay)
