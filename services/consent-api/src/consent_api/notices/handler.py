"""Notice-topic events in: each licensee's progress on a revocation, for the seller to see.

A plain handler (testable without a broker), applied once per event id; the consumer applies a
whole poll of events in one transaction. A poll's events are folded in memory first (per notice,
the status the events give one after another, from its current one) and written with a few
statements: the processed ids, one SELECT ... FOR UPDATE of the notices' rows, one upsert, one
insert of resolutions. About 8 events per revocation arrive together, and ORM loads and flushes
per event cost most of the consumer's CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from consent_api.notices import repository
from consent_api.notices.models import ProcessedEvent
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


def moves(current: str, status: str) -> bool:
    """Whether a notice at `current` takes `status` from a later event."""
    return (status == "delivered" and current == "failed") or RANK[status] >= RANK[current]


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


@dataclass(slots=True)
class _Fold:
    """The events of one notice in a batch, in order: the first one's notice id and status (used
    when the row is new) and the statuses of all of them."""

    notice_id: str
    statuses: list[str]

    def final(self, current: str | None) -> str | None:
        """The status after these events from `current` (None: no row yet); None if unchanged."""
        status, changed = current, False
        for s in self.statuses:
            if status is None or moves(status, s):
                status, changed = s, True
        return status if changed else None


def _write(session: Session, events: Sequence[pb.NoticeEvent]) -> None:
    """The effect of `events` (fresh, in order) in a few statements."""
    folds: dict[tuple[str, str], _Fold] = {}
    resolutions: dict[str, tuple[int, list[str]]] = {}
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "revocation_resolved":
            # The first resolution of a revocation stays.
            msg = event.revocation_resolved
            resolutions.setdefault(event.revocation_id, (msg.notice_count, sorted(msg.licensee_ids)))
            continue
        status = STATUS.get(kind or "")
        if status is None or not event.revocation_id or not event.licensee_id:
            continue
        key = (event.revocation_id, event.licensee_id)
        fold = folds.get(key)
        if fold is None:
            folds[key] = _Fold(event.notice_id, [status])
        else:
            fold.statuses.append(status)
    now = utcnow()
    if resolutions:
        rows = [
            {"revocation_id": r, "notice_count": n, "licensee_ids": ids, "resolved_at": now}
            for r, (n, ids) in sorted(resolutions.items())
        ]
        repository.add_resolutions(session, rows)
    if not folds:
        return
    keys = sorted(folds)
    current = repository.lock_statuses(session, keys)
    writes = []
    for key in keys:
        status = folds[key].final(current.get(key))
        if status is not None:
            revocation_id, licensee_id = key
            # notice_id only counts for a new row: the conflict update leaves it alone.
            writes.append(
                {
                    "revocation_id": revocation_id,
                    "licensee_id": licensee_id,
                    "notice_id": folds[key].notice_id,
                    "status": status,
                    "updated_at": now,
                }
            )
    if writes:
        repository.upsert_notices(session, writes, RANK)


class NoticeEventHandler(BatchHandler[pb.NoticeEvent]):
    """The consumer's handler: a poll's events in one transaction."""

    def decode(self, value: bytes | None) -> pb.NoticeEvent:
        return decode(value)

    def apply(self, session: Session, event: pb.NoticeEvent) -> bool:
        return apply(session, event)

    def apply_batch(self, session: Session, events: Sequence[pb.NoticeEvent]) -> list[bool]:
        return apply_events(session, events)
