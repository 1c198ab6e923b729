"""Notice-topic events, through the worker's outbox (same transaction as the change)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.outbox import insert_outbox, outbox_row
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.config import WorkerSettings
from revocation_worker.db import Outbox

PRODUCER = "revocation-worker"


def timestamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def _envelope(
    *, licensee_id: str, notice_id: str, revocation_id: str, subject_id: str, payload: dict[str, object]
) -> tuple[str, str, pb.NoticeEvent]:
    (field, message), *rest = payload.items()
    assert not rest, "one payload per event"
    event_id = new_id("evt")
    envelope = pb.NoticeEvent(
        event_id=event_id,
        occurred_at=timestamp(utcnow()),
        licensee_id=licensee_id,
        notice_id=notice_id,
        revocation_id=revocation_id,
        subject_id=subject_id,
        producer=PRODUCER,
    )
    getattr(envelope, field).CopyFrom(message)
    return event_id, field, envelope


def publish(
    session: Session,
    settings: WorkerSettings,
    *,
    licensee_id: str,
    notice_id: str = "",
    revocation_id: str = "",
    subject_id: str = "",
    key: str | None = None,
    **payload: object,
) -> str:
    """Add one event to the outbox in the caller's transaction; its event id."""
    row = notice_event_row(
        settings,
        licensee_id=licensee_id,
        notice_id=notice_id,
        revocation_id=revocation_id,
        subject_id=subject_id,
        key=key,
        **payload,
    )
    publish_many(session, [row])
    return str(row["event_id"])


def notice_event_row(
    settings: WorkerSettings,
    *,
    licensee_id: str,
    notice_id: str = "",
    revocation_id: str = "",
    subject_id: str = "",
    key: str | None = None,
    **payload: object,
) -> dict[str, Any]:
    """A notice event as the outbox row `publish` would add (`rescind_common.outbox.outbox_row`), for
    `publish_many`: same event, same key."""
    event_id, field, envelope = _envelope(
        licensee_id=licensee_id,
        notice_id=notice_id,
        revocation_id=revocation_id,
        subject_id=subject_id,
        payload=payload,
    )
    return outbox_row(
        topic=settings.kafka_notice_topic,
        key=key or licensee_id,
        event_id=event_id,
        event_type=field,
        message=envelope,
    )


class NoticeIds(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def licensee_id(self) -> str: ...
    @property
    def revocation_id(self) -> str: ...
    @property
    def subject_id(self) -> str: ...


def notice_event_of(settings: WorkerSettings, notice: NoticeIds, **payload: Any) -> dict[str, Any]:
    """`notice_event_row` of an event about this notice (its licensee, revocation and subject)."""
    return notice_event_row(
        settings,
        licensee_id=notice.licensee_id,
        notice_id=notice.id,
        revocation_id=notice.revocation_id,
        subject_id=notice.subject_id,
        **payload,
    )


def publish_notice_event(
    session: Session, settings: WorkerSettings, notice: NoticeIds, **payload: object
) -> None:
    """Add an event about this notice to the outbox in the caller's transaction."""
    publish_many(session, [notice_event_of(settings, notice, **payload)])


def publish_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Add many events to the outbox in the caller's transaction, in order
    (rescind_common.outbox.insert_outbox). Pending ORM changes are flushed first, so that the
    statements run in the order the caller made them (as the ORM path's autoflush did)."""
    if not rows:
        return
    session.flush()
    insert_outbox(session, Outbox, rows)
