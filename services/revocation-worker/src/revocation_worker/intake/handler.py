"""Consent-topic events in, revocations out. A plain handler, testable without a broker.

One revocation arrives as several ConsentRevoked events (one per consent touched, split in
chunks of sample ids). The handler stores each part; once every part of a revocation is in,
it marks the revocation `ready` for the resolver, which asks the registry who holds the samples.
Applied exactly once per event id (processed_events, same transaction).
"""

from __future__ import annotations

import datetime as dt

from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from rescind_common.consumer import PoisonMessage
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
    if not value:
        raise PoisonMessage("empty record")
    event = pb.ConsentEvent()
    try:
        event.ParseFromString(value)
    except Exception as exc:
        raise PoisonMessage(f"undecodable ConsentEvent: {exc}") from exc
    if not event.event_id or not event.subject_id:
        raise PoisonMessage("ConsentEvent without event_id or subject_id")
    return event


def apply(session: Session, event: pb.ConsentEvent) -> bool:
    """Apply one event in the caller's transaction; False when it was seen before."""
    if session.get(ProcessedEvent, event.event_id) is not None:
        return False
    session.add(ProcessedEvent(event_id=event.event_id, processed_at=utcnow()))
    if event.WhichOneof("payload") != "consent_revoked":
        return True
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
    return True


def _complete(session: Session, revocation: Revocation) -> bool:
    rows = session.execute(
        select(RevocationPart.consent_id, func.count(), func.max(RevocationPart.chunk_count))
        .where(RevocationPart.revocation_id == revocation.id)
        .group_by(RevocationPart.consent_id)
    ).all()
    if len(rows) < revocation.consent_count:
        return False
    return all(seen >= expected for _, seen, expected in rows)


class ConsentEventHandler:
    """The consumer's callback: decode, then one transaction per record."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def __call__(self, record: ConsumerRecord) -> None:
        event = decode(record.value)
        with self.session_factory() as session, session.begin():
            apply(session, event)
