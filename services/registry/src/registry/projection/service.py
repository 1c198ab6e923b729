"""Applying consent-topic events to the projection: a plain handler, testable without a broker.

`apply_event(session, event)` (and `apply_events` for a consumer's batch) runs inside the caller's
transaction and records the event id in `processed_events` in that same transaction, so a
redelivered event changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from registry.licenses import repository as licenses_repo
from registry.projection import repository
from registry.projection.models import ProcessedEvent, ProjectedConsent
from rescind_common.consumer import apply_new
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

log = logging.getLogger(__name__)

KIND_FROM_PB = {
    pb.SAMPLE_KIND_FACE_IMAGE: "face_image",
    pb.SAMPLE_KIND_VOICE_RECORDING: "voice_recording",
    pb.SAMPLE_KIND_HANDWRITING: "handwriting",
    pb.SAMPLE_KIND_DEMOGRAPHICS: "demographics",
    pb.SAMPLE_KIND_OTHER: "other",
}
TRIGGER_FROM_PB = {
    pb.REVOCATION_TRIGGER_SUBJECT: "subject",
    pb.REVOCATION_TRIGGER_EXPIRY: "expiry",
    pb.REVOCATION_TRIGGER_ERASURE: "erasure",
}


class InvalidEvent(ValueError):
    """The event can never be applied (no id, no subject): the consumer dead-letters it."""


def _time(ts: Timestamp) -> dt.datetime:
    value: dt.datetime = ts.ToDatetime(tzinfo=dt.UTC)
    return value


MAX_ID = 40  # every id column is VARCHAR(40); consent-api's ids are 30 characters


def _check_ids(event: pb.ConsentEvent, kind: str | None) -> None:
    """Ids longer than the columns would fail on PostgreSQL at every retry: refuse them at once."""
    ids = [event.event_id, event.subject_id]
    if kind is not None:
        msg = getattr(event, kind)
        ids += [getattr(msg, name) for name in ("consent_id", "revocation_id") if hasattr(msg, name)]
        ids += list(getattr(msg, "sample_ids", []))
        ids += [s.sample_id for s in getattr(msg, "samples", [])]
    too_long = [i for i in ids if len(i) > MAX_ID]
    if too_long:
        raise InvalidEvent(f"event {event.event_id[:MAX_ID]} carries ids over {MAX_ID} characters")


def check_event(event: pb.ConsentEvent) -> None:
    """Raise InvalidEvent for an event that can never be applied."""
    if not event.event_id:
        raise InvalidEvent("event without event_id")
    if not event.subject_id:
        raise InvalidEvent(f"event {event.event_id} without subject_id")
    _check_ids(event, event.WhichOneof("payload"))


def apply_event(session: Session, event: pb.ConsentEvent) -> bool:
    """Apply one event; return False when it had been applied before (a redelivery)."""
    return apply_events(session, [event])[0]


def apply_events(session: Session, events: Sequence[pb.ConsentEvent]) -> list[bool]:
    """Apply events in order in the caller's transaction, as `apply_event` on each in turn would:
    one True/False per event (False: applied before, or repeated earlier in `events`)."""
    for event in events:
        check_event(event)
    return apply_new(session, ProcessedEvent, events, _processed_row, _apply)


def _occurred(event: pb.ConsentEvent) -> dt.datetime | None:
    return _time(event.occurred_at) if event.HasField("occurred_at") else None


def _processed_row(event: pb.ConsentEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.WhichOneof("payload") or "unknown",
        "subject_id": event.subject_id,
        "occurred_at": _occurred(event),
        "processed_at": utcnow(),
    }


def _apply(session: Session, event: pb.ConsentEvent) -> None:
    kind = event.WhichOneof("payload")
    occurred = _occurred(event)
    now = utcnow()
    if kind == "sample_registered":
        _sample_registered(session, event.subject_id, event.sample_registered, now)
    elif kind == "consent_granted":
        _consent_granted(session, event.subject_id, event.consent_granted, occurred or now, now)
    elif kind == "consent_revoked":
        _consent_revoked(session, event.subject_id, event.consent_revoked, now)
    elif kind == "consent_expired":
        _consent_expired(session, event.subject_id, event.consent_expired, now)
    elif kind == "subject_erased":
        # Its consents were revoked by the ConsentRevoked events of the same revocation.
        erased = event.subject_erased
        repository.add_erasure(session, erased.revocation_id, event.subject_id, erased.sample_count, occurred)
    else:
        # A payload newer than this reader: skipping it (and remembering that) is what old readers do.
        log.info("skipping event %s with an unknown payload", event.event_id)


def _sample_registered(session: Session, subject_id: str, msg: pb.SampleRegistered, now: dt.datetime) -> None:
    rows = [
        {
            "sample_id": s.sample_id,
            "subject_id": subject_id,
            "sha256": s.sha256,
            "kind": KIND_FROM_PB.get(s.kind, "other"),
            "registered_at": now,
        }
        for s in msg.samples
        if s.sample_id
    ]
    repository.add_samples(session, rows)


def _stub(
    session: Session, subject_id: str, consent_id: str, purposes: list[str], licensee: str
) -> ProjectedConsent:
    """A consent first seen through its revocation (events reordered by a replay): record what
    the revocation says so that it is never mistaken for an active consent."""
    consent = ProjectedConsent(
        consent_id=consent_id,
        subject_id=subject_id,
        licensee_id=licensee or None,
        purposes=purposes,
        revoked_purposes=[],
        excluded_licensees=[],
        status="active",
        updated_at=utcnow(),
    )
    session.add(consent)
    session.flush()
    return consent


def _consent_granted(
    session: Session, subject_id: str, msg: pb.ConsentGranted, granted_at: dt.datetime, now: dt.datetime
) -> None:
    expires_at = _time(msg.expires_at) if msg.HasField("expires_at") else None
    consent = repository.get_consent(session, msg.consent_id, lock=True)
    if consent is None:
        session.add(
            ProjectedConsent(
                consent_id=msg.consent_id,
                subject_id=subject_id,
                licensee_id=msg.licensee_id or None,
                purposes=list(dict.fromkeys(msg.purposes)),
                revoked_purposes=[],
                excluded_licensees=[],
                status="active",
                expires_at=expires_at,
                granted_at=granted_at,
                updated_at=now,
            )
        )
        session.flush()
    else:
        # A revocation got here first: fill in the grant's facts, keep what the revocation ended.
        consent.licensee_id = msg.licensee_id or None
        consent.purposes = list(dict.fromkeys(msg.purposes))
        consent.expires_at = expires_at
        consent.granted_at = granted_at
        consent.updated_at = now
    repository.add_consent_samples(session, msg.consent_id, list(dict.fromkeys(msg.sample_ids)))


def _consent_revoked(session: Session, subject_id: str, msg: pb.ConsentRevoked, now: dt.datetime) -> None:
    # Locking the consent row serialises this with license creation (which locks it too), so a
    # license is either refused or recorded before its samples are marked withdrawn.
    consent = repository.get_consent(session, msg.consent_id, lock=True)
    if consent is None:
        consent = _stub(session, subject_id, msg.consent_id, list(msg.purposes), msg.licensee_id)
    trigger = TRIGGER_FROM_PB.get(msg.trigger, "subject")
    revoked_purposes = list(consent.revoked_purposes or [])
    live = [p for p in consent.purposes if p not in revoked_purposes]
    purposes = list(dict.fromkeys(msg.purposes))
    sample_ids = list(dict.fromkeys(msg.sample_ids))
    if consent.granted_at is None:
        # Not granted as far as we know: remember which samples this revocation named.
        repository.add_consent_samples(session, consent.consent_id, sample_ids)

    if msg.only_licensee_id:
        # One licensee withdrawn from a consent open to any licensee: only its licenses are revoked,
        # and it can no longer be licensed under this consent; the others keep theirs.
        excluded = list(consent.excluded_licensees or [])
        if msg.only_licensee_id not in excluded:
            consent.excluded_licensees = [*excluded, msg.only_licensee_id]
        affected = licenses_repo.ids_for_consent(
            session, consent.consent_id, licensee_id=msg.only_licensee_id
        )
        licenses_repo.revoke_samples(session, affected, sample_ids, msg.revocation_id, now)
    elif msg.consent_ended:
        # Whatever this chunk names, an ended consent covers nothing any more.
        if consent.status == "active":
            consent.status = "expired" if trigger == "expiry" else "revoked"
            consent.ended_at = now
            consent.ended_by = msg.revocation_id
        repository.revoke_consent_samples(session, consent.consent_id, None, msg.revocation_id, now)
        affected = licenses_repo.ids_for_consent(session, consent.consent_id)
        licenses_repo.revoke_samples(session, affected, None, msg.revocation_id, now)
    elif not purposes or set(live) <= set(purposes):
        # These samples are withdrawn for every purpose (consent-api names all live purposes then).
        repository.revoke_consent_samples(session, consent.consent_id, sample_ids, msg.revocation_id, now)
        affected = licenses_repo.ids_for_consent(session, consent.consent_id)
        licenses_repo.revoke_samples(session, affected, sample_ids, msg.revocation_id, now)
    else:
        # Some purposes withdrawn; the samples stay consented for the others.
        consent.revoked_purposes = [*revoked_purposes, *(p for p in purposes if p not in revoked_purposes)]
        affected = licenses_repo.ids_for_consent(session, consent.consent_id, purposes)
        licenses_repo.revoke_samples(session, affected, sample_ids, msg.revocation_id, now)
    consent.updated_at = now
    licenses_repo.refresh_status(session, affected, now)


def _consent_expired(session: Session, subject_id: str, msg: pb.ConsentExpired, now: dt.datetime) -> None:
    consent = repository.get_consent(session, msg.consent_id, lock=True)
    if consent is None:
        consent = _stub(session, subject_id, msg.consent_id, [], "")
    consent.status = "expired"
    if consent.ended_at is None:
        consent.ended_at = _time(msg.expired_at) if msg.HasField("expired_at") else now
    consent.ended_by = consent.ended_by or msg.revocation_id or None
    consent.updated_at = now
    # Its samples and licenses are withdrawn by the ConsentRevoked events of `revocation_id`
    # (trigger EXPIRY); marking the consent expired already stops new licenses.
