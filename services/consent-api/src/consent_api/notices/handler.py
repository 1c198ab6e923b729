"""Notice-topic events in: each licensee's progress on a revocation, for the seller to see.

A plain handler (testable without a broker), applied once per event id; the consumer applies a
whole poll of events in one transaction. A poll's events are folded in memory first (per notice,
the status and details the events give one after another from its current row: `notices.rules`)
and written with a few statements: the processed ids, one SELECT ... FOR UPDATE of the notices'
rows, one of their subjects' rows, the audit entries of every step (each step of a notice is on its
subject's audit chain, and the notice keeps where), one upsert, one insert of resolutions. About 8
events per revocation arrive together, and ORM loads and flushes per event cost most of the
consumer's CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from consent_api.audit import service as audit
from consent_api.notices import repository, rules
from consent_api.notices.models import ProcessedEvent
from consent_api.revocations import repository as revocations_repo
from consent_api.subjects import repository as subjects_repo
from consent_api.subjects.models import Subject
from rescind_common import bulk
from rescind_common.consumer import BatchHandler, apply_new, decode_event
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb

# The status each event gives, and their order (notices.rules), where readers found them before.
STATUS = {k: v for k, v in rules.STATUS.items() if v is not None}
RANK = rules.RANK


def decode(value: bytes | None) -> pb.NoticeEvent:
    return decode_event(pb.NoticeEvent, value)


def apply(session: Session, event: pb.NoticeEvent) -> bool:
    """Apply one event in the caller's transaction; False when it was seen before."""
    return apply_events(session, [event])[0]


def apply_events(session: Session, events: Sequence[pb.NoticeEvent]) -> list[bool]:
    """Apply events in order in the caller's transaction, as `apply` on each in turn would."""
    fresh: list[pb.NoticeEvent] = []
    applied = apply_new(session, ProcessedEvent, events, _processed_row, lambda _s, e: fresh.append(e))
    _write(session, fresh)
    return applied


def _processed_row(event: pb.NoticeEvent) -> dict[str, Any]:
    return {"event_id": event.event_id, "processed_at": utcnow()}


def _write(session: Session, events: Sequence[pb.NoticeEvent]) -> None:
    """The effect of `events` (fresh, in order) in a few statements."""
    now = utcnow()
    steps: dict[tuple[str, str], list[rules.Step]] = {}
    first_notice: dict[tuple[str, str], str] = {}
    ordered: list[tuple[pb.NoticeEvent, rules.Step]] = []
    resolutions: dict[str, tuple[int, list[str]]] = {}
    for event in events:
        if event.WhichOneof("payload") == "revocation_resolved":
            # The first resolution of a revocation stays.
            msg = event.revocation_resolved
            resolutions.setdefault(event.revocation_id, (msg.notice_count, sorted(msg.licensee_ids)))
            continue
        step = rules.step_of(event, now)
        if step is None:
            continue
        key = (event.revocation_id, event.licensee_id)
        steps.setdefault(key, []).append(step)
        first_notice.setdefault(key, event.notice_id)
        ordered.append((event, step))
    if resolutions:
        rows = [
            {"revocation_id": r, "notice_count": n, "licensee_ids": ids, "resolved_at": now}
            for r, (n, ids) in sorted(resolutions.items())
        ]
        repository.add_resolutions(session, rows)
    if not steps:
        return
    keys = sorted(steps)
    current = repository.lock_notices(session, keys)
    _audit(session, ordered)
    writes = []
    for key in keys:
        row = current.get(key)
        folded = rules.fold(row["status"] if row else None, row, steps[key])
        revocation_id, licensee_id = key
        # notice_id only counts for a new row: the conflict update leaves it alone.
        writes.append(
            {
                "revocation_id": revocation_id,
                "licensee_id": licensee_id,
                "notice_id": first_notice[key],
                # A reminder first (its creation not in yet): the notice was told, nothing more known.
                "status": folded.status or "pending",
                "updated_at": now,
                **folded.details,
            }
        )
    repository.upsert_notices(session, writes, RANK, rules.DETAILS)


def _audit(session: Session, ordered: Sequence[tuple[pb.NoticeEvent, rules.Step]]) -> None:
    """Append each step to the audit chain of the subject whose revocation it is (this database's
    word, not the event's), subjects locked in id order after the notices: the one lock order of
    this handler (the API never locks notices). Note on each step where it sits. Steps of a
    revocation this service does not know are not chained."""
    owner = revocations_repo.subject_ids(session, [e.revocation_id for e, _ in ordered])
    subjects = subjects_repo.lock_by_ids(session, list(owner.values()))
    if not subjects:
        return
    writes: list[bulk.Write] = []
    for event, step in ordered:
        subject = subjects.get(owner.get(event.revocation_id, ""))
        if subject is None:
            continue
        entry, statements = audit.append_statements(
            subject,
            actor="licensee" if step.kind in ANSWERS else "system",
            action=f"notice.{step.step}",
            entity_id=(event.notice_id or event.revocation_id)[:40],
            data=rules.audit_data(event, step),
        )
        writes += statements
        step.audit = {
            "step": step.step,
            "chain_id": subject.id,
            "seq": entry.seq,
            "hash": entry.hash,
            "at": rules.iso(entry.at),
        }
    bulk.execute(session, _folded(writes))


def _folded(writes: list[bulk.Write]) -> list[bulk.Write]:
    """The appends' writes with each chain head written once, after every entry: the head updates
    set absolute values, so the last per subject is the one that counts. The entries (adjacent
    inserts) become one write, and on PostgreSQL the two one round trip."""
    subjects = Subject.__table__
    heads: dict[str, dict[str, Any]] = {}
    others: list[bulk.Write] = []
    for w in writes:
        if w.kind == "update" and w.table is subjects:
            heads.update((row["id"], row) for row in w.rows)
        else:
            others.append(w)
    return [*others, bulk.update_rows(Subject, list(heads.values()))] if heads else others


ANSWERS = frozenset({"notice_acknowledged", "notice_partially_acknowledged"})


class NoticeEventHandler(BatchHandler[pb.NoticeEvent]):
    """The consumer's handler: a poll's events in one transaction."""

    def decode(self, value: bytes | None) -> pb.NoticeEvent:
        return decode(value)

    def apply(self, session: Session, event: pb.NoticeEvent) -> bool:
        return apply(session, event)

    def apply_batch(self, session: Session, events: Sequence[pb.NoticeEvent]) -> list[bool]:
        return apply_events(session, events)
