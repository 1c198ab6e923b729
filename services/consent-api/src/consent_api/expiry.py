"""Consents with `expires_at` revoke themselves when it passes.

Runs in every API replica. Safe with several: each expiry happens in its own
transaction with the subject row locked, and re-checks that the consent is
still active before touching it, so two replicas never expire one consent twice.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session

from consent_api.audit import service as audit
from consent_api.consents import repository as consents_repo
from consent_api.context import AppContext
from consent_api.events import publish, timestamp
from consent_api.revocations import service as revocations
from consent_api.subjects import repository as subjects_repo
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

log = logging.getLogger(__name__)


def expire_due(ctx: AppContext, limit: int = 100) -> int:
    """Expire consents past their `expires_at`; return how many were expired."""
    now = utcnow()
    with ctx.session_factory() as session:
        candidates = consents_repo.expired_candidates(session, now, limit)
    done = 0
    for consent_id, subject_id in candidates:
        with ctx.session_factory() as session, session.begin():
            if _expire_one(session, ctx, consent_id, subject_id):
                done += 1
    return done


def _expire_one(session: Session, ctx: AppContext, consent_id: str, subject_id: str) -> bool:
    subject = subjects_repo.by_id(session, subject_id, lock=True)
    consent = consents_repo.get(session, subject_id, consent_id, lock=True)
    now = utcnow()
    if subject is None or consent is None or consent.status != "active":
        return False
    if consent.expires_at is None or consent.expires_at > now:
        return False
    # ConsentExpired goes first: per the schema it is "followed by the ConsentRevoked events of the
    # revocation that the expiry created", and the outbox publishes in insertion order.
    revocation_id = new_id("rev")
    publish(
        session,
        ctx.settings,
        subject.id,
        consent_expired=pb.ConsentExpired(
            consent_id=consent.id, revocation_id=revocation_id, expired_at=timestamp(consent.expires_at)
        ),
    )
    revocation = revocations.revoke(
        session,
        ctx,
        subject,
        [revocations.Target(consent)],
        scope="consent",
        trigger="expiry",
        consent_id=consent.id,
        end_status="expired",
        revocation_id=revocation_id,
    )
    consent.status = "expired"
    consent.ended_at = consent.ended_at or now
    audit.append(
        session,
        subject,
        actor="system",
        action="consent.expired",
        entity_id=consent.id,
        data={"revocation_id": revocation.id},
    )
    return True


class ExpiryScheduler:
    def __init__(self, ctx: AppContext, interval: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="consent-expiry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                n = expire_due(self.ctx)
                while n and not self.stop_event.is_set():
                    log.info("expired %d consents", n)
                    n = expire_due(self.ctx)
            except Exception as exc:
                log.warning("expiry pass failed: %s: %s", type(exc).__name__, exc)
