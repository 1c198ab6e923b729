"""The revocation-worker's notice events as consent-api receives them: real `NoticeEvent` protobufs
(proto/rescind/v1/notice_events.proto), built per step and applied by consent-api's handler in its
own transaction, as the consumer does after a poll."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from consent_api.notices import handler
from rescind_common.db import make_engine, make_session_factory
from rescind_common.ids import new_id
from rescind_common.proto.rescind.v1 import notice_events_pb2 as npb


def ts(value: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


class Worker:
    """What the worker says about one revocation's notices; `notice(licensee)` is stable per licensee."""

    def __init__(self, revocation_id: str, subject_id: str) -> None:
        self.revocation_id = revocation_id
        self.subject_id = subject_id
        self.notices: dict[str, str] = {}

    def notice(self, licensee_id: str) -> str:
        return self.notices.setdefault(licensee_id, new_id("ntc"))

    def event(self, licensee_id: str, at: dt.datetime | None = None, **payload: Any) -> npb.NoticeEvent:
        e = npb.NoticeEvent(
            event_id=new_id("evt"),
            licensee_id=licensee_id,
            notice_id=self.notice(licensee_id) if licensee_id else "",
            revocation_id=self.revocation_id,
            subject_id=self.subject_id,
            producer="revocation-worker",
        )
        e.occurred_at.CopyFrom(ts(at or dt.datetime.now(dt.UTC)))
        ((field, message),) = payload.items()
        getattr(e, field).CopyFrom(message)
        return e

    def resolved(self, *licensee_ids: str) -> npb.NoticeEvent:
        msg = npb.RevocationResolved(notice_count=len(licensee_ids), licensee_ids=list(licensee_ids))
        return self.event("", revocation_resolved=msg)

    def created(
        self,
        licensee_id: str,
        *,
        name: str,
        deadline: dt.datetime,
        licenses: Iterable[dict[str, Any]] = (),
        models: Iterable[dict[str, Any]] = (),
        at: dt.datetime | None = None,
    ) -> npb.NoticeEvent:
        msg = npb.NoticeCreated(
            licensee_name=name,
            webhook_id=f"msg_{self.notice(licensee_id)}",
            licenses=[npb.NoticeLicense(**lic) for lic in licenses],
            models=[npb.NoticeModel(**m) for m in models],
        )
        msg.deadline.CopyFrom(ts(deadline))
        msg.model_count = len(msg.models)
        return self.event(licensee_id, at, notice_created=msg)

    def delivered(
        self, licensee_id: str, *, status_code: int = 200, at: dt.datetime | None = None
    ) -> npb.NoticeEvent:
        msg = npb.NoticeDelivered(
            endpoint_id="ep_1",
            attempts=1,
            status_code=status_code,
            webhook_id=f"msg_{self.notice(licensee_id)}",
        )
        msg.first_attempt_at.CopyFrom(ts(at or dt.datetime.now(dt.UTC)))
        return self.event(licensee_id, at, notice_delivered=msg)

    def answered(
        self,
        licensee_id: str,
        *,
        complete: bool,
        outcome: str = "",
        basis: str = "",
        models: Iterable[tuple[str, str] | tuple[str, str, str]] = (),
        evidence_digest: str = "",
        ack_digest: str = "",
        at: dt.datetime | None = None,
    ) -> npb.NoticeEvent:
        """An acknowledgement (`complete`) or a partial one; models as (model_id, action[, basis])."""
        answers = [
            npb.ModelAnswer(model_id=m[0], action=m[1], basis=m[2] if len(m) > 2 else "") for m in models
        ]
        msg = npb.NoticeAcknowledged(
            action=npb.ACK_ACTION_COMPLETED,
            model_ids=[a.model_id for a in answers],
            outcome=outcome,
            basis=basis,
            model_answers=answers,
            complete=complete,
            evidence_digest=evidence_digest,
            ack_digest=ack_digest,
            signature_verified=False,
        )
        msg.answered_at.CopyFrom(ts(at or dt.datetime.now(dt.UTC)))
        field = "notice_acknowledged" if complete else "notice_partially_acknowledged"
        return self.event(licensee_id, at, **{field: msg})

    def reminded(self, licensee_id: str, *, deadline: dt.datetime) -> npb.NoticeEvent:
        msg = npb.NoticeReminded()
        msg.deadline.CopyFrom(ts(deadline))
        return self.event(licensee_id, notice_reminded=msg)

    def overdue(self, licensee_id: str, *, deadline: dt.datetime) -> npb.NoticeEvent:
        msg = npb.NoticeOverdue()
        msg.deadline.CopyFrom(ts(deadline))
        return self.event(licensee_id, notice_overdue=msg)


def apply(db_url: str, events: Iterable[npb.NoticeEvent]) -> list[bool]:
    """consent-api's handler applies `events` as one poll, in one transaction."""
    engine = make_engine(db_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session, session.begin():
            return handler.apply_events(session, list(events))
    finally:
        engine.dispose()
