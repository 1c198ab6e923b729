"""Applying consent-topic events to the projection: a plain handler, testable without a broker.

`apply_event(session, event)` (and `apply_events` for a consumer's batch) runs inside the caller's
transaction and records the event id in `processed_events` in that same transaction, so a
redelivered event changes nothing.

A revocation that takes samples from licenses also writes, in that transaction, one
LicenseSamplesWithdrawn per license to the registry's outbox (the license topic): a license recorded
after the revocation but before the projection applied it (while the projection still said
"active") is not in the worker's first holders lookup, and this event is how the worker learns that
its licensee must be told too. Every license either exists when the revocation is applied (license
creation and `_revoke_licenses` lock the same consent row) or is refused afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from registry import events as license_events
from registry.db import Outbox
from registry.licenses import repository as licenses_repo
from registry.projection import repository
from registry.projection.models import ProcessedEvent
from rescind_common.consumer import apply_new
from rescind_common.db import utcnow
from rescind_common.outbox import insert_outbox
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb
from rescind_common.settings import RescindSettings

log = logging.getLogger(__name__)

# Where license events go unless the caller names the topic (RESCIND_KAFKA_LICENSE_TOPIC).
LICENSE_TOPIC: str = RescindSettings.model_fields["kafka_license_topic"].default

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


def apply_event(session: Session, event: pb.ConsentEvent, *, license_topic: str = LICENSE_TOPIC) -> bool:
    """Apply one event; return False when it had been applied before (a redelivery)."""
    return apply_events(session, [event], license_topic=license_topic)[0]


def apply_events(
    session: Session, events: Sequence[pb.ConsentEvent], *, license_topic: str = LICENSE_TOPIC
) -> list[bool]:
    """Apply events in the caller's transaction, as `apply_event` on each in turn would: one
    True/False per event (False: applied before, or repeated earlier in `events`).

    The new events' effects are gathered and written a few statements at a time (`_Batch`): events
    on different consents are independent, those on one consent keep their order. The license
    events they cause go to the outbox last, in one insert for the whole batch."""
    for event in events:
        check_event(event)
    conn = session.connection()
    batch = _Batch(conn, license_topic)
    applied = apply_new(session, ProcessedEvent, events, _processed_row, batch.add)
    batch.flush()
    insert_outbox(conn, Outbox, batch.events)
    return applied


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


MAX_PENDING = 500  # consents gathered before they are written (bounds the id lists)


class _Batch:
    """The effects of a run of events, written together by `flush()`: samples, then grants, then
    revocations, each kind in a few statements whatever the number of events.

    Moving an event's effect later is safe only past events of other consents, so a grant waits in
    the batch only while its consent has no grant or revocation waiting, and a revocation only while
    its consent has no revocation waiting (a grant of it runs first at the flush, as it came first);
    otherwise the batch is flushed before it. Expiries are rare: they flush and run alone."""

    def __init__(self, conn: Connection, license_topic: str) -> None:
        self.conn = conn
        self.license_topic = license_topic
        # Outbox rows of the license events the flushed revocations caused, in order.
        self.events: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.grants: dict[str, tuple[str, pb.ConsentGranted, dt.datetime, dt.datetime]] = {}
        self.revocations: dict[str, tuple[str, pb.ConsentRevoked, dt.datetime]] = {}
        self.erasures: list[dict[str, Any]] = []

    def add(self, _session: Session, event: pb.ConsentEvent) -> None:
        kind = event.WhichOneof("payload")
        now = utcnow()
        if kind == "sample_registered":
            self.samples += _sample_rows(event.subject_id, event.sample_registered, now)
        elif kind == "consent_granted":
            msg = event.consent_granted
            if msg.consent_id in self.grants or msg.consent_id in self.revocations:
                self.flush()
            self.grants[msg.consent_id] = (event.subject_id, msg, _occurred(event) or now, now)
        elif kind == "consent_revoked":
            revoked = event.consent_revoked
            if revoked.consent_id in self.revocations:
                self.flush()
            self.revocations[revoked.consent_id] = (event.subject_id, revoked, now)
        elif kind == "consent_expired":
            self.flush()
            _consent_expired(self.conn, event.subject_id, event.consent_expired, now)
        elif kind == "subject_erased":
            # Its consents were revoked by the ConsentRevoked events of the same revocation.
            erased = event.subject_erased
            self.erasures.append(
                {
                    "revocation_id": erased.revocation_id,
                    "subject_id": event.subject_id,
                    "sample_count": erased.sample_count,
                    "occurred_at": _occurred(event),
                }
            )
        else:
            # A payload newer than this reader: skipping it (and remembering that) is what old readers do.
            log.info("skipping event %s with an unknown payload", event.event_id)
        if len(self.grants) + len(self.revocations) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        if self.samples:
            repository.add_sample_rows(self.conn, self.samples)
        if self.erasures:
            repository.add_erasures(self.conn, self.erasures)
        if self.grants:
            _consents_granted(self.conn, self.grants)
        if self.revocations:
            self.events += _consents_revoked(self.conn, self.revocations, self.license_topic)
        self.samples, self.erasures = [], []
        self.grants, self.revocations = {}, {}


def _sample_rows(subject_id: str, msg: pb.SampleRegistered, now: dt.datetime) -> list[dict[str, Any]]:
    return [
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


def _new_consent(
    consent_id: str, subject_id: str, licensee: str, purposes: list[str], now: dt.datetime
) -> dict[str, Any]:
    """Every column of a projected consent, active, not granted as far as we know."""
    return {
        "consent_id": consent_id,
        "subject_id": subject_id,
        "licensee_id": licensee or None,
        "purposes": purposes,
        "revoked_purposes": [],
        "excluded_licensees": [],
        "status": "active",
        "expires_at": None,
        "granted_at": None,
        "ended_at": None,
        "ended_by": None,
        "updated_at": now,
    }


def _consents_granted(
    conn: Connection, grants: dict[str, tuple[str, pb.ConsentGranted, dt.datetime, dt.datetime]]
) -> None:
    known = repository.lock_consent_states(conn, sorted(grants))
    new: list[dict[str, Any]] = []
    filled: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for consent_id, (subject_id, msg, granted_at, now) in grants.items():
        expires_at = _time(msg.expires_at) if msg.HasField("expires_at") else None
        purposes = list(dict.fromkeys(msg.purposes))
        if consent_id in known:
            # A revocation got here first: fill in the grant's facts, keep what the revocation ended.
            filled.append(
                {
                    "b_id": consent_id,
                    "b_licensee_id": msg.licensee_id or None,
                    "b_purposes": purposes,
                    "b_expires_at": expires_at,
                    "b_granted_at": granted_at,
                    "b_updated_at": now,
                }
            )
        else:
            row = _new_consent(consent_id, subject_id, msg.licensee_id, purposes, now)
            row.update(expires_at=expires_at, granted_at=granted_at)
            new.append(row)
        samples += _consent_sample_rows(consent_id, msg.sample_ids)
    repository.insert_consents(conn, new)
    repository.set_granted(conn, filled)
    repository.insert_consent_samples(conn, samples)


def _consent_sample_rows(consent_id: str, sample_ids: Sequence[str]) -> list[dict[str, Any]]:
    return [{"consent_id": consent_id, "sample_id": s, "revoked": False} for s in dict.fromkeys(sample_ids)]


def _consents_revoked(
    conn: Connection, revocations: dict[str, tuple[str, pb.ConsentRevoked, dt.datetime]], license_topic: str
) -> list[dict[str, Any]]:
    """Revocations of distinct consents; returns the outbox rows of the license events they cause
    (`_revoke_licenses`). Per consent, as consent-api means them:
    - `only_licensee_id`: that licensee's licenses lose the samples, and it can no longer be licensed
      under this (open) consent; the others keep theirs;
    - `consent_ended`: every sample of the consent and of its licenses is withdrawn;
    - every live purpose named (or none): these samples are withdrawn for every purpose;
    - else: these purposes are withdrawn; the licenses for them lose these samples."""
    ids = sorted(revocations)
    known = repository.lock_consent_states(conn, ids)
    stubs: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    add_samples: list[dict[str, Any]] = []
    revoke_all: list[dict[str, Any]] = []
    revoke_some: list[dict[str, Any]] = []
    # consent id -> (purposes or None: all, licensee or None: all, samples or None: all, revocation, at)
    licenses: dict[str, tuple[set[str] | None, str | None, list[str] | None, str, dt.datetime]] = {}
    for consent_id in ids:
        subject_id, msg, now = revocations[consent_id]
        row = known.get(consent_id)
        if row is None:
            # A consent first seen through its revocation (events reordered by a replay): record what
            # the revocation says so that it is never mistaken for an active consent.
            state = _new_consent(consent_id, subject_id, msg.licensee_id, list(msg.purposes), now)
        else:
            state = row._asdict()
        trigger = TRIGGER_FROM_PB.get(msg.trigger, "subject")
        revoked_purposes = list(state["revoked_purposes"] or [])
        excluded = list(state["excluded_licensees"] or [])
        live = [p for p in state["purposes"] if p not in revoked_purposes]
        purposes = list(dict.fromkeys(msg.purposes))
        sample_ids = list(dict.fromkeys(msg.sample_ids))
        at, revocation_id = now, msg.revocation_id
        if state["granted_at"] is None:
            # Not granted as far as we know: remember which samples this revocation named.
            add_samples += _consent_sample_rows(consent_id, sample_ids)

        if msg.only_licensee_id:
            if msg.only_licensee_id not in excluded:
                excluded.append(msg.only_licensee_id)
            licenses[consent_id] = (None, msg.only_licensee_id, sample_ids, revocation_id, at)
        elif msg.consent_ended:
            # Whatever this chunk names, an ended consent covers nothing any more.
            if state["status"] == "active":
                state.update(
                    status="expired" if trigger == "expiry" else "revoked",
                    ended_at=now,
                    ended_by=revocation_id,
                )
            revoke_all.append({"b_id": consent_id, "b_revocation_id": revocation_id, "b_at": at})
            licenses[consent_id] = (None, None, None, revocation_id, at)
        elif not purposes or set(live) <= set(purposes):
            # Samples the grant never mentioned (an out-of-order revocation) are recorded as withdrawn.
            add_samples += _consent_sample_rows(consent_id, sample_ids)
            revoke_some += [
                {"b_id": consent_id, "b_sample_id": s, "b_revocation_id": revocation_id, "b_at": at}
                for s in sample_ids
            ]
            licenses[consent_id] = (None, None, sample_ids, revocation_id, at)
        else:
            revoked_purposes += [p for p in purposes if p not in revoked_purposes]
            licenses[consent_id] = (set(purposes), None, sample_ids, revocation_id, at)
        state.update(revoked_purposes=revoked_purposes, excluded_licensees=excluded, updated_at=now)
        if row is None:
            stubs.append(state)
        else:
            states.append(_state_params(state))
    repository.insert_consents(conn, stubs)
    repository.set_states(conn, states)
    # A sample named twice (an unknown consent's samples also withdrawn) is inserted once.
    unique = {(r["consent_id"], r["sample_id"]): r for r in add_samples}
    repository.insert_consent_samples(conn, list(unique.values()))
    repository.revoke_all_consent_samples(conn, revoke_all)
    repository.revoke_consent_samples(conn, revoke_some)
    return _revoke_licenses(conn, licenses, license_topic)


def _revoke_licenses(
    conn: Connection,
    plans: dict[str, tuple[set[str] | None, str | None, list[str] | None, str, dt.datetime]],
    license_topic: str,
) -> list[dict[str, Any]]:
    """Withdraw the samples from the licenses each revocation reaches; a license whose every sample
    is withdrawn turns revoked. Returns the outbox rows of one LicenseSamplesWithdrawn per license
    that lost samples now (none for a license this revocation had already emptied, none for a
    repeated event): what it lost, whether it ended, which revocation took them."""
    affected: dict[str, list[Any]] = {}
    for lic in licenses_repo.lock_for_consents(conn, sorted(plans)):
        purposes, licensee, _samples, _rev, _at = plans[lic.consent_id]
        if (purposes is None or lic.purpose in purposes) and (
            licensee is None or lic.licensee_id == licensee
        ):
            affected.setdefault(lic.consent_id, []).append(lic)
    counts: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for consent_id, rows in affected.items():
        _purposes, _licensee, sample_ids, revocation_id, at = plans[consent_id]
        if sample_ids is not None and not sample_ids:
            withdrawn: dict[str, list[str]] = {}
        else:
            withdrawn = licenses_repo.revoke_samples(
                conn, [r.id for r in rows], sample_ids, revocation_id, at
            )
        for lic in rows:
            taken = withdrawn.get(lic.id, [])
            count = lic.revoked_sample_count + len(taken)
            ends = count >= lic.sample_count and lic.status != "revoked"
            if count != lic.revoked_sample_count or ends:
                counts.append(
                    {
                        "b_id": lic.id,
                        "b_revoked_sample_count": count,
                        "b_status": "revoked" if ends else lic.status,
                        "b_revoked_at": at if ends else lic.revoked_at,
                    }
                )
            if taken:
                events += license_events.samples_withdrawn(
                    license_topic,
                    license_id=lic.id,
                    licensee_id=lic.licensee_id,
                    consent_id=consent_id,
                    revocation_id=revocation_id,
                    purpose=lic.purpose,
                    sample_ids=taken,
                    license_ended=ends,
                    now=at,
                )
    licenses_repo.set_counts(conn, counts)
    return events


def _consent_expired(conn: Connection, subject_id: str, msg: pb.ConsentExpired, now: dt.datetime) -> None:
    # Its samples and licenses are withdrawn by the ConsentRevoked events of `revocation_id`
    # (trigger EXPIRY); marking the consent expired already stops new licenses.
    row = repository.lock_consent_states(conn, [msg.consent_id]).get(msg.consent_id)
    state = _new_consent(msg.consent_id, subject_id, "", [], now) if row is None else row._asdict()
    state.update(
        status="expired",
        ended_at=state["ended_at"] or (_time(msg.expired_at) if msg.HasField("expired_at") else now),
        ended_by=state["ended_by"] or msg.revocation_id or None,
        updated_at=now,
    )
    if row is None:
        repository.insert_consents(conn, [state])
    else:
        repository.set_states(conn, [_state_params(state)])


def _state_params(state: dict[str, Any]) -> dict[str, Any]:
    """A consent's state after a revocation or expiry, as `repository.set_states` takes it."""
    return {
        "b_id": state["consent_id"],
        "b_revoked_purposes": state["revoked_purposes"],
        "b_excluded_licensees": state["excluded_licensees"],
        "b_status": state["status"],
        "b_ended_at": state["ended_at"],
        "b_ended_by": state["ended_by"],
        "b_updated_at": state["updated_at"],
    }
