"""Consent-topic and license-topic events in, revocations and rechecks out. A plain handler,
testable without a broker.

One revocation arrives as several ConsentRevoked events (one per consent touched, split in
chunks of sample ids). The handler stores each part; once every part of a revocation is in,
it marks the revocation `ready` for the resolver, which asks the registry who holds the samples.

The registry's LicenseSamplesWithdrawn (license topic) says that a revocation took samples from a
licensee's license: the handler records a recheck of (revocation, licensee), and the resolver makes
sure that licensee has a notice (rechecks.py). That is how a license recorded while the registry's
projection lagged behind the revocation, missed by the revocation's holders lookup, is told.

Applied exactly once per event id (processed_events, same transaction, both topics); the consumer
applies a whole poll of events in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from sqlalchemy.orm import Session, sessionmaker

from rescind_common.consumer import BatchHandler, PoisonMessage, claim_events, decode_event
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb
from rescind_common.proto.rescind.v1 import license_events_pb2 as lpb
from rescind_common.settings import RescindSettings
from revocation_worker.db import ProcessedEvent
from revocation_worker.intake import repository

# What the consumer hands the handler: an event of either topic.
IntakeEvent: TypeAlias = pb.ConsentEvent | lpb.LicenseEvent
# The license topic unless the caller names another (RESCIND_KAFKA_LICENSE_TOPIC).
LICENSE_TOPIC: str = RescindSettings.model_fields["kafka_license_topic"].default

# As notices name them. An unspecified trigger (an older producer) is a withdrawal by the subject.
TRIGGERS = {
    pb.REVOCATION_TRIGGER_SUBJECT: "withdrawal",
    pb.REVOCATION_TRIGGER_PURPOSE_WITHDRAWAL: "purpose_withdrawal",
    pb.REVOCATION_TRIGGER_LICENSEE_WITHDRAWAL: "licensee_withdrawal",
    pb.REVOCATION_TRIGGER_EXPIRY: "expiry",
    pb.REVOCATION_TRIGGER_ERASURE: "erasure",
}


def decode(value: bytes | None) -> pb.ConsentEvent:
    return decode_event(pb.ConsentEvent, value, required=("event_id", "subject_id"))


def decode_license(value: bytes | None) -> lpb.LicenseEvent:
    """A license-topic event; `PoisonMessage` for one that could never be applied (no revocation,
    ids longer than the columns: PostgreSQL would refuse it at every retry)."""
    event = decode_event(lpb.LicenseEvent, value, required=("event_id", "licensee_id"))
    if len(event.event_id) > 40 or len(event.licensee_id) > 64:
        raise PoisonMessage(f"LicenseEvent {event.event_id[:40]} with ids longer than the columns")
    if event.WhichOneof("payload") == "license_samples_withdrawn":
        revocation_id = event.license_samples_withdrawn.revocation_id
        if not revocation_id or len(revocation_id) > 40:
            raise PoisonMessage(f"LicenseSamplesWithdrawn {event.event_id} without a valid revocation_id")
    return event


def apply(session: Session, event: IntakeEvent) -> bool:
    """Apply one event in the caller's transaction; False when it was seen before."""
    return apply_events(session, [event])[0]


def apply_events(session: Session, events: Sequence[IntakeEvent]) -> list[bool]:
    """Apply events in order in the caller's transaction, as `apply` on each in turn would.

    A few statements per batch, not per event: the processed ids claimed in one INSERT, the
    batch's revocations locked and their parts read in one query each, new revocations and parts
    in one multi-row INSERT each, readiness decided in Python from the existing and the new parts,
    and one UPDATE for the revocations that turn ready."""
    rows = [_processed_row(event) for event in events]
    fresh = claim_events(session, ProcessedEvent, rows)
    applied: list[bool] = []
    revoked: list[pb.ConsentEvent] = []
    withdrawn: list[lpb.LicenseEvent] = []
    for event, row in zip(events, rows, strict=True):
        first = row["event_id"] in fresh
        fresh.discard(row["event_id"])  # a second copy in the same batch is a repeat
        if first:
            kind = event.WhichOneof("payload")
            if isinstance(event, pb.ConsentEvent) and kind == "consent_revoked":
                revoked.append(event)
            elif isinstance(event, lpb.LicenseEvent) and kind == "license_samples_withdrawn":
                withdrawn.append(event)
        applied.append(first)
    _apply_revoked(session, revoked)
    _apply_withdrawn(session, withdrawn)
    return applied


def _apply_withdrawn(session: Session, events: Sequence[lpb.LicenseEvent]) -> None:
    """One recheck per (revocation, licensee), however many licenses and chunks reported it."""
    if not events:
        return
    now = utcnow()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        key = (event.license_samples_withdrawn.revocation_id, event.licensee_id)
        rows.setdefault(
            key,
            {
                "revocation_id": key[0],
                "licensee_id": key[1],
                "created_at": now,
                "attempts": 0,
                "next_check_at": now,
                "last_error": None,
            },
        )
    repository.add_rechecks(session, [rows[k] for k in sorted(rows)])


def _apply_revoked(session: Session, events: Sequence[pb.ConsentEvent]) -> None:
    if not events:
        return
    now = utcnow()
    rev_ids = sorted({e.consent_revoked.revocation_id for e in events})
    # (state, consent_count) of those that exist, locked in id order like every other writer.
    existing = repository.lock_revocations(session, rev_ids)
    parts = repository.part_keys(session, rev_ids)  # {(rev, consent, chunk): chunk_count}
    new_revocations: dict[str, dict[str, Any]] = {}
    new_parts: dict[tuple[str, str, int], dict[str, Any]] = {}
    for event in events:
        r = event.consent_revoked
        if r.revocation_id not in existing and r.revocation_id not in new_revocations:
            # The first event of a revocation creates it, as applying one by one would.
            occurred = event.occurred_at.ToDatetime(tzinfo=dt.UTC) if event.HasField("occurred_at") else now
            new_revocations[r.revocation_id] = {
                "id": r.revocation_id,
                "subject_id": event.subject_id,
                "trigger": TRIGGERS.get(r.trigger, "withdrawal"),
                "consent_count": max(1, r.consent_count),
                "state": "collecting",
                "occurred_at": occurred,
                "created_at": now,
                "resolve_attempts": 0,
                "next_resolve_at": None,
            }
        key = (r.revocation_id, r.consent_id, r.chunk_index)
        if key in parts or key in new_parts:
            continue
        chunk_count = max(1, r.chunk_count)
        parts[key] = chunk_count
        new_parts[key] = {
            "revocation_id": r.revocation_id,
            "consent_id": r.consent_id,
            "chunk_index": r.chunk_index,
            "chunk_count": chunk_count,
            "sample_ids": list(r.sample_ids),
            "purposes": list(r.purposes),
            "licensee_id": r.licensee_id or None,
            "only_licensee_id": r.only_licensee_id or None,
        }
    collecting = {rid: count for rid, (state, count) in existing.items() if state == "collecting"}
    collecting.update({rid: row["consent_count"] for rid, row in new_revocations.items()})
    ready = _complete(parts, collecting)
    for rid in ready & new_revocations.keys():
        new_revocations[rid].update(state="ready", next_resolve_at=now)
    repository.insert_revocations(session, list(new_revocations.values()))
    repository.insert_parts(session, list(new_parts.values()))
    repository.mark_ready(session, sorted(ready - new_revocations.keys()), now)


def _complete(parts: Mapping[tuple[str, str, int], int], consent_counts: Mapping[str, int]) -> set[str]:
    """The revocations (of `consent_counts`: id -> consents expected) whose every part is in: as
    many consents as expected, each with as many chunks as its largest chunk_count says."""
    seen: dict[str, dict[str, list[int]]] = {}  # rev -> consent -> [chunks seen, max chunk_count]
    for (rid, consent_id, _), chunk_count in parts.items():
        if rid not in consent_counts:
            continue
        tally = seen.setdefault(rid, {}).setdefault(consent_id, [0, 0])
        tally[0] += 1
        tally[1] = max(tally[1], chunk_count)
    return {
        rid
        for rid, consents in seen.items()
        if len(consents) >= consent_counts[rid] and all(n >= expected for n, expected in consents.values())
    }


def _processed_row(event: IntakeEvent) -> dict[str, Any]:
    return {"event_id": event.event_id, "processed_at": utcnow()}


class IntakeHandler(BatchHandler[IntakeEvent]):
    """The consumer's handler (consent and license topics): a poll's events in one transaction."""

    def __init__(self, session_factory: sessionmaker[Session], *, license_topic: str = LICENSE_TOPIC) -> None:
        super().__init__(session_factory)
        self.license_topic = license_topic

    def decode(self, value: bytes | None) -> IntakeEvent:
        return decode(value)

    def decode_record(self, topic: str, value: bytes | None) -> IntakeEvent:
        return decode_license(value) if topic == self.license_topic else decode(value)

    def apply(self, session: Session, event: IntakeEvent) -> bool:
        return apply(session, event)

    def apply_batch(self, session: Session, events: Sequence[IntakeEvent]) -> list[bool]:
        return apply_events(session, events)
