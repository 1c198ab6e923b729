"""Pure rules of the notice projection: what one worker event says about a holder's notice, and how
a notice's stored state moves under a run of such events (no database, no clock but the one given).

Statuses never go back when events are replayed out of order (RANK); the details follow their own
rules: the first creation and the first delivery stay (the proof names the first delivery), a later
answer replaces an earlier one unless it is older or would demote a complete answer to a partial
one, and every step's audit-chain position is kept in the order it was recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb

STATUS = {
    "notice_created": "pending",
    "notice_delivered": "delivered",
    "notice_partially_acknowledged": "partially_acknowledged",
    "notice_acknowledged": "acknowledged",
    "notice_reminded": None,  # a reminder changes no status
    "notice_overdue": "overdue",
    "notice_failed": "failed",
}
# A later status never goes back to an earlier one when events are replayed out of order. A partial
# answer and overdue rank alike: whichever came later shows (overdue stays visible as a flag).
RANK = {
    "pending": 0,
    "delivered": 1,
    "failed": 1,
    "overdue": 2,
    "partially_acknowledged": 2,
    "acknowledged": 3,
}
# The step names of the audit chain (`notice.<step>`) and of the proof.
STEP = {
    "notice_created": "told",
    "notice_delivered": "delivered",
    "notice_partially_acknowledged": "partially_answered",
    "notice_acknowledged": "answered",
    "notice_reminded": "reminded",
    "notice_overdue": "overdue",
    "notice_failed": "failed",
}
# The columns a notice's details live in (beside its key, notice_id, status and updated_at).
DETAILS = (
    "licensee_name",
    "webhook_id",
    "told_at",
    "deadline",
    "licenses",
    "models",
    "delivered_at",
    "first_attempt_at",
    "delivery_status_code",
    "outcome",
    "basis",
    "model_answers",
    "complete",
    "evidence_digest",
    "ack_digest",
    "signature_verified",
    "answered_at",
    "reminded_at",
    "overdue_at",
    "failed_at",
    "steps",
)
_ANSWER = (
    "outcome",
    "basis",
    "model_answers",
    "complete",
    "evidence_digest",
    "ack_digest",
    "signature_verified",
    "answered_at",
)


def moves(current: str, status: str) -> bool:
    """Whether a notice at `current` takes `status` from a later event."""
    return (status == "delivered" and current == "failed") or RANK[status] >= RANK[current]


def timestamp(ts: Timestamp) -> dt.datetime | None:
    """A protobuf timestamp as an aware datetime; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


@dataclass(slots=True)
class Step:
    """What one event says: its kind (the payload's name), the status it gives (None: none) and the
    details it carries; `audit` is the chain position it was recorded at (filled by the handler)."""

    kind: str
    status: str | None
    at: dt.datetime
    values: dict[str, Any]
    audit: dict[str, Any] | None = None

    @property
    def step(self) -> str:
        return STEP[self.kind]


def step_of(event: pb.NoticeEvent, now: dt.datetime) -> Step | None:
    """The step an event reports; None for events that are not about one notice."""
    kind = event.WhichOneof("payload") or ""
    if kind not in STATUS or not event.revocation_id or not event.licensee_id:
        return None
    at = timestamp(event.occurred_at) or now
    values: dict[str, Any] = {}
    if kind == "notice_created":
        msg = event.notice_created
        values = {
            "licensee_name": msg.licensee_name or None,
            "webhook_id": msg.webhook_id or None,
            "deadline": timestamp(msg.deadline),
            "licenses": [
                {
                    "license_id": lic.license_id,
                    "consent_id": lic.consent_id,
                    "purposes": list(lic.purposes),
                    "trigger": lic.trigger,
                    "sample_count": lic.sample_count,
                }
                for lic in msg.licenses
            ],
            "models": [
                {
                    "model_id": m.model_id,
                    "name": m.name,
                    "version": m.version,
                    "whole": m.whole or not m.shard_ids,
                    "shard_ids": list(m.shard_ids),
                    "license_ids": list(m.license_ids),
                }
                for m in msg.models
            ],
        }
    elif kind == "notice_delivered":
        d = event.notice_delivered
        values = {
            "status_code": d.status_code or None,
            "webhook_id": d.webhook_id or None,
            "first_attempt_at": timestamp(d.first_attempt_at),
        }
    elif kind in ("notice_acknowledged", "notice_partially_acknowledged"):
        a = getattr(event, kind)
        values = {
            "outcome": a.outcome or None,
            "basis": a.basis or None,
            "model_answers": [
                {"model_id": m.model_id, "action": m.action, "basis": m.basis or None}
                for m in a.model_answers
            ]
            # An ack from before final answers: the models it reports, action unknown.
            or [{"model_id": m, "action": None, "basis": None} for m in a.model_ids],
            "complete": kind == "notice_acknowledged",
            "evidence_digest": a.evidence_digest or None,
            "ack_digest": a.ack_digest or None,
            "signature_verified": a.signature_verified,
            "answered_at": timestamp(a.answered_at) or at,
        }
    elif kind in ("notice_reminded", "notice_overdue"):
        values = {"deadline": timestamp(getattr(event, kind).deadline)}
    return Step(kind, STATUS[kind], at, values)


def audit_data(event: pb.NoticeEvent, step: Step) -> dict[str, Any]:
    """The pseudonymous facts of a step for the subject's audit chain (no names: ids and digests)."""
    data: dict[str, Any] = {
        "revocation_id": event.revocation_id,
        "notice_id": event.notice_id,
        "licensee_id": event.licensee_id,
        "occurred_at": iso(step.at),
    }
    v = step.values
    if step.kind == "notice_created":
        data.update(
            webhook_id=v["webhook_id"],
            deadline=iso(v["deadline"]),
            license_ids=[lic["license_id"] for lic in v["licenses"]],
            model_ids=[m["model_id"] for m in v["models"]],
        )
    elif step.kind == "notice_delivered":
        data.update(status_code=v["status_code"], webhook_id=v["webhook_id"])
    elif step.kind in ("notice_acknowledged", "notice_partially_acknowledged"):
        data.update(
            outcome=v["outcome"],
            basis=v["basis"],
            complete=v["complete"],
            evidence_digest=v["evidence_digest"],
            ack_digest=v["ack_digest"],
            answered_at=iso(v["answered_at"]),
        )
    elif step.kind in ("notice_reminded", "notice_overdue"):
        data.update(deadline=iso(v["deadline"]))
    return data


@dataclass(slots=True)
class Fold:
    """A notice's state after a run of steps: its status and its details."""

    status: str | None
    details: dict[str, Any] = field(default_factory=dict)
    changed: bool = False


def fold(current_status: str | None, current: Mapping[str, Any] | None, steps: Iterable[Step]) -> Fold:
    """The notice after `steps` (in order) from its stored status and details (None: no row yet)."""
    details: dict[str, Any] = {name: (current or {}).get(name) for name in DETAILS}
    out = Fold(current_status, details)
    for s in steps:
        out.changed = True
        if s.status is not None and (out.status is None or moves(out.status, s.status)):
            out.status = s.status
        _merge(details, s)
    return out


def _merge(d: dict[str, Any], s: Step) -> None:
    v = s.values
    if s.kind == "notice_created":
        if d["told_at"] is None:
            d["told_at"] = s.at
        for name in ("licensee_name", "webhook_id", "deadline"):
            d[name] = v[name] or d[name]
        if v["licenses"] or d["licenses"] is None:
            d["licenses"] = v["licenses"]
        if v["models"] or d["models"] is None:
            d["models"] = v["models"]
    elif s.kind == "notice_delivered":
        # The first delivery stays what the proof names; a redelivery only adds an audit step.
        if d["delivered_at"] is None:
            d["delivered_at"] = s.at
            d["delivery_status_code"] = v["status_code"]
            d["first_attempt_at"] = v["first_attempt_at"]
        d["webhook_id"] = d["webhook_id"] or v["webhook_id"]
    elif s.kind in ("notice_acknowledged", "notice_partially_acknowledged"):
        older = d["answered_at"] is not None and v["answered_at"] < d["answered_at"]
        demotes = d["complete"] is True and not v["complete"]
        if not older and not demotes:
            for name in _ANSWER:
                d[name] = v[name]
    elif s.kind == "notice_reminded":
        d["reminded_at"] = s.at
        d["deadline"] = v["deadline"] or d["deadline"]
    elif s.kind == "notice_overdue":
        if d["overdue_at"] is None:
            d["overdue_at"] = s.at
        d["deadline"] = v["deadline"] or d["deadline"]
    elif s.kind == "notice_failed" and d["failed_at"] is None:
        d["failed_at"] = s.at
    if s.audit is not None:
        d["steps"] = [*(d["steps"] or []), s.audit]


def is_overdue(status: str, details: Mapping[str, Any], now: dt.datetime) -> bool:
    """Overdue: the worker said so, or the deadline passed without a complete answer."""
    if details.get("overdue_at") is not None:
        return True
    deadline = details.get("deadline")
    return status != "acknowledged" and deadline is not None and now > deadline
