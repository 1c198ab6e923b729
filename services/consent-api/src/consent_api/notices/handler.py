"""Notice-topic events in: each licensee's progress on a revocation, for the seller to see.

A plain handler (testable without a broker), applied once per event id in one transaction.
"""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy.orm import Session, sessionmaker

from consent_api.notices.models import ProcessedEvent, RevocationNotice, RevocationResolution
from rescind_common.consumer import PoisonMessage
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb

STATUS = {
    "notice_created": "pending",
    "notice_delivered": "delivered",
    "notice_acknowledged": "acknowledged",
    "notice_overdue": "overdue",
    "notice_failed": "failed",
}
# A later status never goes back to an earlier one when events are replayed out of order.
RANK = {"pending": 0, "delivered": 1, "failed": 1, "overdue": 2, "acknowledged": 3}


def decode(value: bytes | None) -> pb.NoticeEvent:
    if not value:
        raise PoisonMessage("empty record")
    event = pb.NoticeEvent()
    try:
        event.ParseFromString(value)
    except Exception as exc:
        raise PoisonMessage(f"undecodable NoticeEvent: {exc}") from exc
    if not event.event_id:
        raise PoisonMessage("NoticeEvent without event_id")
    return event


def apply(session: Session, event: pb.NoticeEvent) -> bool:
    if session.get(ProcessedEvent, event.event_id) is not None:
        return False
    session.add(ProcessedEvent(event_id=event.event_id, processed_at=utcnow()))
    kind = event.WhichOneof("payload")
    if kind == "revocation_resolved":
        if session.get(RevocationResolution, event.revocation_id) is None:
            session.add(
                RevocationResolution(
                    revocation_id=event.revocation_id,
                    notice_count=event.revocation_resolved.notice_count,
                    resolved_at=utcnow(),
                )
            )
        return True
    status = STATUS.get(kind or "")
    if status is None or not event.revocation_id or not event.licensee_id:
        return True
    row = session.get(RevocationNotice, (event.revocation_id, event.licensee_id), with_for_update=True)
    if row is None:
        session.add(
            RevocationNotice(
                revocation_id=event.revocation_id,
                licensee_id=event.licensee_id,
                notice_id=event.notice_id,
                status=status,
                updated_at=utcnow(),
            )
        )
    elif (status == "delivered" and row.status == "failed") or RANK[status] >= RANK[row.status]:
        row.status = status
        row.updated_at = utcnow()
    return True


class NoticeEventHandler:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def __call__(self, record: ConsumerRecord) -> None:
        event = decode(record.value)
        with self.session_factory() as session, session.begin():
            apply(session, event)
