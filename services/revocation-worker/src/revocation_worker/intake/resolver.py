"""Ready revocations -> notices: ask the registry who holds the samples, make one notice per licensee.

Runs in the worker loop. The registry being down only delays notices: a failed lookup is retried
with backoff, forever, and never dead-lettered (a revocation must reach its holders).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.context import AppContext
from revocation_worker.events import publish
from revocation_worker.intake.models import Revocation, RevocationPart
from revocation_worker.notices import service as notices

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

    def holders(self, sample_ids: list[str]) -> list[dict[str, Any]]:
        """Merge the registry's answers for every batch into one entry per licensee."""
        merged: dict[str, dict[str, Any]] = {}
        for i in range(0, len(sample_ids), HOLDERS_BATCH):
            r = self._client.post(
                "/v1/holders", json={"sample_ids": sample_ids[i : i + HOLDERS_BATCH]}, headers=self._auth()
            )
            r.raise_for_status()
            for h in r.json().get("holders", []):
                entry = merged.setdefault(
                    h["licensee_id"],
                    {"licensee_id": h["licensee_id"], "samples": [], "licenses": {}, "models": {}},
                )
                entry["samples"].extend(h.get("samples", []))
                for lic in h.get("licenses", []):
                    entry["licenses"][lic["license_id"]] = lic
                for m in h.get("models", []):
                    prev = entry["models"].get(m["model_id"])
                    if prev is None:
                        entry["models"][m["model_id"]] = dict(m)
                    else:
                        for key in ("shard_ids", "sample_ids", "license_ids"):
                            prev[key] = sorted(set(prev.get(key) or []) | set(m.get(key) or []))
        return [
            {**e, "licenses": list(e["licenses"].values()), "models": list(e["models"].values())}
            for e in merged.values()
        ]

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


def affected(holders: list[dict[str, Any]], withdrawals: list[Withdrawal]) -> list[dict[str, Any]]:
    """Keep only what this revocation withdrew: a licensee holding a sample under ANOTHER consent
    (or for a purpose still consented, or another licensee when only one was withdrawn) is not told."""
    by_consent: dict[str, list[Withdrawal]] = {}
    for w in withdrawals:
        by_consent.setdefault(w.consent_id, []).append(w)
    out = []
    for h in holders:
        licensee_id = h["licensee_id"]
        licenses = {lic["license_id"]: lic for lic in h.get("licenses", [])}
        hit_licenses: set[str] = set()
        hit_samples: set[str] = set()
        for s in h.get("samples", []):
            for license_id in s.get("license_ids", []):
                lic = licenses.get(license_id)
                if lic is None:
                    continue
                for w in by_consent.get(lic.get("consent_id", ""), []):
                    if (
                        s["sample_id"] in w.samples
                        and lic.get("purpose") in w.purposes
                        and w.only_licensee_id in (None, licensee_id)
                    ):
                        hit_licenses.add(license_id)
                        hit_samples.add(s["sample_id"])
        if not hit_samples:
            continue
        models = [
            m
            for m in h.get("models", [])
            if set(m.get("license_ids", [])) & hit_licenses and set(m.get("sample_ids", [])) & hit_samples
        ]
        samples = [s for s in h.get("samples", []) if s["sample_id"] in hit_samples]
        out.append({**h, "samples": samples, "models": models})
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
            raw = registry.holders(samples) if samples else []
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
