"""Notice-topic events in: each licensee's progress on a revocation, for the seller to see.

A plain handler (testable without a broker), applied once per event id; the consumer applies a
whole poll of events in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from consent_api.notices.models import ProcessedEvent, RevocationNotice, RevocationResolution
from rescind_common.consumer import BatchHandler, apply_new, decode_event
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
    return decode_event(pb.NoticeEvent, value)


def apply(session: Session, event: pb.NoticeEvent) -> bool:
    """Apply one event in the caller's transaction; False when it was seen before."""
    return apply_events(session, [event])[0]


def apply_events(session: Session, events: Sequence[pb.NoticeEvent]) -> list[bool]:
    """Apply events in order in the caller's transaction, as `apply` on each in turn would."""
    return apply_new(session, ProcessedEvent, events, _processed_row, _apply)


def _processed_row(event: pb.NoticeEvent) -> dict[str, Any]:
    return {"event_id": event.event_id, "processed_at": utcnow()}


def _apply(session: Session, event: pb.NoticeEvent) -> None:
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
            session.flush()
        return
    status = STATUS.get(kind or "")
    if status is None or not event.revocation_id or not event.licensee_id:
        return
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
        # Visible to the next event of the same notice in this batch (session.get sees flushed rows).
        session.flush()
    elif (status == "delivered" and row.status == "failed") or RANK[status] >= RANK[row.status]:
        row.status = status
        row.updated_at = utcnow()


class NoticeEventHandler(BatchHandler[pb.NoticeEvent]):
    """The consumer's handler: a poll's events in one transaction."""

    def decode(self, value: bytes | None) -> pb.NoticeEvent:
        return decode(value)

    def apply(self, session: Session, event: pb.NoticeEvent) -> bool:
        return apply(session, event)

    def apply_batch(self, session: Session, events: Sequence[pb.NoticeEvent]) -> list[bool]:
        return apply_events(session, events)
