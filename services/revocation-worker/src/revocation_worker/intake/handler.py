"""Consent-topic events in, revocations out. A plain handler, testable without a broker.

One revocation arrives as several ConsentRevoked events (one per consent touched, split in
chunks of sample ids). The handler stores each part; once every part of a revocation is in,
it marks the revocation `ready` for the resolver, which asks the registry who holds the samples.
Applied exactly once per event id (processed_events, same transaction); the consumer applies a
whole poll of events in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rescind_common.consumer import BatchHandler, apply_new, decode_event
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb
from revocation_worker.db import ProcessedEvent
from revocation_worker.intake.models import Revocation, RevocationPart

TRIGGERS = {
    pb.REVOCATION_TRIGGER_SUBJECT: "subject",
    pb.REVOCATION_TRIGGER_EXPIRY: "expiry",
    pb.REVOCATION_TRIGGER_ERASURE: "erasure",
}


def decode(value: bytes | None) -> pb.ConsentEvent:
    return decode_event(pb.ConsentEvent, value, required=("event_id", "subject_id"))


def apply(session: Session, event: pb.ConsentEvent) -> bool:
    """Apply one event in the caller's transaction; False when it was seen before."""
    return apply_events(session, [event])[0]


def apply_events(session: Session, events: Sequence[pb.ConsentEvent]) -> list[bool]:
    """Apply events in order in the caller's transaction, as `apply` on each in turn would."""
    return apply_new(session, ProcessedEvent, events, _processed_row, _apply)


def _processed_row(event: pb.ConsentEvent) -> dict[str, Any]:
    return {"event_id": event.event_id, "processed_at": utcnow()}


def _apply(session: Session, event: pb.ConsentEvent) -> None:
    if event.WhichOneof("payload") != "consent_revoked":
        return
    r = event.consent_revoked
    occurred = event.occurred_at.ToDatetime(tzinfo=dt.UTC) if event.HasField("occurred_at") else utcnow()
    revocation = session.get(Revocation, r.revocation_id, with_for_update=True)
    if revocation is None:
        revocation = Revocation(
            id=r.revocation_id,
            subject_id=event.subject_id,
            trigger=TRIGGERS.get(r.trigger, "subject"),
            consent_count=max(1, r.consent_count),
            state="collecting",
            occurred_at=occurred,
            created_at=utcnow(),
        )
        session.add(revocation)
        session.flush()
    key = (r.revocation_id, r.consent_id, r.chunk_index)
    if session.get(RevocationPart, key) is None:
        session.add(
            RevocationPart(
                revocation_id=r.revocation_id,
                consent_id=r.consent_id,
                chunk_index=r.chunk_index,
                chunk_count=max(1, r.chunk_count),
                sample_ids=list(r.sample_ids),
                purposes=list(r.purposes),
                licensee_id=r.licensee_id or None,
                only_licensee_id=r.only_licensee_id or None,
            )
        )
        session.flush()
    if revocation.state == "collecting" and _complete(session, revocation):
        revocation.state = "ready"
        revocation.next_resolve_at = utcnow()


def _complete(session: Session, revocation: Revocation) -> bool:
    rows = session.execute(
        select(RevocationPart.consent_id, func.count(), func.max(RevocationPart.chunk_count))
        .where(RevocationPart.revocation_id == revocation.id)
        .group_by(RevocationPart.consent_id)
    ).all()
    if len(rows) < revocation.consent_count:
        return False
    return all(seen >= expected for _, seen, expected in rows)


class ConsentEventHandler(BatchHandler[pb.ConsentEvent]):
    """The consumer's handler: a poll's events in one transaction."""

    def decode(self, value: bytes | None) -> pb.ConsentEvent:
        return decode(value)

    def apply(self, session: Session, event: pb.ConsentEvent) -> bool:
        return apply(session, event)

    def apply_batch(self, session: Session, events: Sequence[pb.ConsentEvent]) -> list[bool]:
        return apply_events(session, events)
