"""consent-api's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.orm import Session

from consent_api.events import TRIGGER_TO_PB

REVOCATIONS = Counter(
    "rescind_revocations_total", "Revocations committed, by trigger (subject, expiry, erasure)", ["trigger"]
)
for _trigger in TRIGGER_TO_PB:
    REVOCATIONS.labels(_trigger)  # every series from the start, so rate() sees the first one

_PENDING = "rescind.revocations_pending"


def count_revocation(session: Session, trigger: str) -> None:
    """Count a revocation when its transaction commits; a rolled-back one is not counted."""
    session.info.setdefault(_PENDING, []).append(trigger)


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    for trigger in session.info.pop(_PENDING, ()):
        REVOCATIONS.labels(trigger).inc()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)
