"""Building consent-topic events and putting them in the outbox (same transaction as the change)."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from consent_api.config import ConsentSettings
from consent_api.db import Outbox
from rescind_common import bulk
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.outbox import outbox_row, outbox_write
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

PRODUCER = "consent-api"

KIND_TO_PB = {
    "face_image": pb.SAMPLE_KIND_FACE_IMAGE,
    "voice_recording": pb.SAMPLE_KIND_VOICE_RECORDING,
    "handwriting": pb.SAMPLE_KIND_HANDWRITING,
    "demographics": pb.SAMPLE_KIND_DEMOGRAPHICS,
    "other": pb.SAMPLE_KIND_OTHER,
}
TRIGGER_TO_PB = {
    "subject": pb.REVOCATION_TRIGGER_SUBJECT,
    "expiry": pb.REVOCATION_TRIGGER_EXPIRY,
    "erasure": pb.REVOCATION_TRIGGER_ERASURE,
}


# A subject's withdrawal by one of these scopes is told apart from a withdrawal of everything: a
# holder told of a purpose-only or licensee-only withdrawal keeps what other purposes or licensees
# still cover.
SCOPE_TRIGGERS = {
    "purpose": pb.REVOCATION_TRIGGER_PURPOSE_WITHDRAWAL,
    "licensee": pb.REVOCATION_TRIGGER_LICENSEE_WITHDRAWAL,
}


def event_trigger(trigger: str, scope: str) -> pb.RevocationTrigger:
    """The ConsentRevoked trigger of a revocation (its stored `trigger` and `scope`): expiry and
    erasure as they are; the subject's own withdrawal by purpose or by licensee as such, any
    other (all, one consent, some samples) as a withdrawal."""
    if trigger == "subject" and scope in SCOPE_TRIGGERS:
        return SCOPE_TRIGGERS[scope]
    return TRIGGER_TO_PB[trigger]


def notice_trigger(trigger: str, scope: str) -> str:
    """The trigger as buyers' notices name it: withdrawal, purpose_withdrawal, licensee_withdrawal,
    expiry or erasure (the stored `trigger` says `subject` for every withdrawal of the subject's)."""
    name = (
        pb.RevocationTrigger.Name(event_trigger(trigger, scope)).removeprefix("REVOCATION_TRIGGER_").lower()
    )
    return "withdrawal" if name == "subject" else name


def timestamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def publish(session: Session, settings: ConsentSettings, subject_id: str, **payload: object) -> str:
    """Enqueue one ConsentEvent with exactly one payload field set; return its event id."""
    event_id, write = outbox_insert(settings, subject_id, **payload)
    # Core, on the session's connection, like the other writes of the hot paths: rows land in the
    # order events are published (the relay publishes in outbox id order), with no ORM flush.
    bulk.execute(session, [write])
    return event_id


def outbox_insert(settings: ConsentSettings, subject_id: str, **payload: object) -> tuple[str, bulk.Write]:
    """(event id, the outbox write) for one ConsentEvent with exactly one payload field set; the
    caller executes it in the business transaction (alone, or folded: `rescind_common.bulk.execute`)."""
    (field, message), *rest = payload.items()
    assert not rest, "one payload per event"
    event_id = new_id("evt")
    now = utcnow()
    envelope = pb.ConsentEvent(
        event_id=event_id, subject_id=subject_id, producer=PRODUCER, occurred_at=timestamp(now)
    )
    getattr(envelope, field).CopyFrom(message)
    row = outbox_row(
        topic=settings.kafka_consent_topic,
        key=subject_id,
        event_id=event_id,
        event_type=field,
        message=envelope,
        created_at=now,
    )
    return event_id, outbox_write(Outbox, [row])
