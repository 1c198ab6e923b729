"""Notices: one per (revocation, licensee), with its samples, models, deliveries and acknowledgement."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence, Set
from functools import cached_property
from typing import Any, NotRequired, Protocol, TypedDict

from sqlalchemy.orm import Session

from rescind_common.db import utcnow
from rescind_common.ids import new_ids
from rescind_common.problems import Problem, field_error
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.ackkeys import service as ackkeys
from revocation_worker.context import AppContext
from revocation_worker.delivery import dead_letter_repository as dead_letter_repo
from revocation_worker.delivery import repository as deliveries_repo
from revocation_worker.delivery import rules as delivery_rules
from revocation_worker.delivery.rules import cannot_succeed
from revocation_worker.delivery.signing import webhook_id
from revocation_worker.endpoints import repository as endpoints_repo
from revocation_worker.events import (
    notice_event_of,
    notice_event_row,
    publish_many,
    publish_notice_event,
    timestamp,
)
from revocation_worker.notices import repository
from revocation_worker.notices import rules as ack_rules
from revocation_worker.notices.models import Notice
from revocation_worker.notices.schemas import (
    AckIn,
    AnswerOut,
    DeliveryOut,
    LicenseRef,
    ModelAnswerOut,
    ModelRef,
    NoticeOut,
    SampleRef,
)
from revocation_worker.policy import service as policies
from revocation_worker.policy.rules import deadline_of, reminder_due

WEBHOOK_TYPE = "revocation.notice"


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class RevocationSamples:
    """The samples a revocation's notices cover, with their refs (sample id -> (sha256, kind)): one
    object shared by every licensee's notice, stored once per revocation when a notice covers all
    of it."""

    def __init__(self, ids: Set[str], refs: Mapping[str, tuple[str, str]]) -> None:
        self.ids = ids
        self.refs = refs

    def __len__(self) -> int:
        return len(self.ids)

    def ref(self, sample_id: str) -> tuple[str, str]:
        return self.refs.get(sample_id, ("", "other"))

    @cached_property
    def sorted_refs(self) -> list[tuple[str, str, str]]:
        return [(sid, *self.ref(sid)) for sid in sorted(self.ids)]

    @cached_property
    def digest(self) -> str:
        h = hashlib.sha256()
        for sid, _, _ in self.sorted_refs:
            h.update(sid.encode())
            h.update(b"\n")
        return h.hexdigest()


class HolderNotice(TypedDict):
    """What one licensee is told (from resolver.affected). `sample_ids` is a subset of
    `revocation_samples` and is often the very same set object as other licensees' (the whole
    withdrawal): nothing here is per (licensee x sample) unless the licensee holds only part.

    `licenses`: per license hit, {license_id, consent_id, purposes, sample_count}; `models`: per
    model to act on, {model_id, name, version, scope (whole | shards), shard_ids, license_ids}."""

    licensee_id: str
    sample_ids: Set[str]
    revocation_samples: RevocationSamples
    license_ids: list[str]
    models: list[dict[str, Any]]
    licensee_name: NotRequired[str]
    licenses: NotRequired[list[dict[str, Any]]]


# The revocation triggers as notices name them; `subject` is how revocations were stored before.
TRIGGERS = ("withdrawal", "purpose_withdrawal", "licensee_withdrawal", "expiry", "erasure")


def trigger_name(stored: str | None) -> str:
    """A stored trigger as notices name it (a withdrawal by the subject when unknown)."""
    return stored if stored in TRIGGERS else "withdrawal"


def model_scope(scope: str | None, shard_ids: Sequence[str]) -> str:
    """A notice model's scope; one stored before scopes were kept said whole by no shard ids."""
    return scope if scope in ("whole", "shards") else ("shards" if shard_ids else "whole")


class RevocationLike(Protocol):
    """What making notices reads of a revocation: a `Revocation` or a plain row."""

    @property
    def id(self) -> str: ...
    @property
    def subject_id(self) -> str: ...
    @property
    def occurred_at(self) -> dt.datetime: ...
    @property
    def trigger(self) -> str: ...


def create_many(
    session: Session,
    ctx: AppContext,
    items: Sequence[tuple[RevocationLike, Sequence[HolderNotice]]],
    now: dt.datetime,
    *,
    events: Sequence[dict[str, Any]] = (),
) -> list[str]:
    """One notice for every (revocation, holder) of a batch, in a few multi-row INSERTs (sample
    sets, notices, samples, models, deliveries, outbox) whatever the number of notices, and one
    NoticeCreated event each, followed in the same outbox INSERT by the caller's `events`. Every
    row is built before the first statement, so a malformed holder raises before anything is
    written. Returns the new notices' ids, in the order of `items`."""
    planned = [(revocation, holder) for revocation, holders in items for holder in holders]
    if not planned:
        publish_many(session, events)
        return []
    deadlines = policies.rules_for(session, ctx.settings, {str(h["licensee_id"]) for _, h in planned})

    # A revocation's sample set is stored once, when one of its notices covers all of it; a set
    # stored by an earlier, partly committed resolution that differs means rows of the notice's own.
    def covers(holder: HolderNotice) -> bool:
        shared, ids = holder["revocation_samples"], holder["sample_ids"]
        return len(ids) == len(shared) and (ids is shared.ids or ids <= shared.ids)

    wanted = {r.id: h["revocation_samples"] for r, h in planned if covers(h)}
    stored = repository.revocation_sample_sets(session, list(wanted))
    usable = {
        rid
        for rid, shared in wanted.items()
        if stored.get(rid, (len(shared), shared.digest)) == (len(shared), shared.digest)
    }
    new_sets = [
        (rid, wanted[rid].digest, wanted[rid].sorted_refs) for rid in sorted(usable) if rid not in stored
    ]

    ids = new_ids("ntc", len(planned))
    notice_rows: list[dict[str, Any]] = []
    own_samples: list[tuple[str, str, str, str]] = []
    model_rows: list[dict[str, Any]] = []
    license_rows: list[dict[str, Any]] = []
    created: list[dict[str, Any]] = []
    per_notice: list[tuple[str, str]] = []  # (notice id, licensee id), for deliveries
    for notice_id, (revocation, holder) in zip(ids, planned, strict=True):
        licensee_id = str(holder["licensee_id"])
        shared = holder["revocation_samples"]
        sample_ids = holder["sample_ids"]
        whole = revocation.id in usable and covers(holder)
        models = [_model_fields(m) for m in holder.get("models", [])]
        trigger = trigger_name(revocation.trigger)
        licensee_name = holder.get("licensee_name")
        licenses: list[dict[str, Any]] = [
            {
                "license_id": str(x["license_id"]),
                "consent_id": str(x["consent_id"]),
                "purposes": sorted(str(p) for p in x.get("purposes") or []),
                "trigger": trigger,
                "sample_count": int(x["sample_count"]),
            }
            for x in holder.get("licenses", [])
        ]
        deadline = deadline_of(revocation.occurred_at, deadlines[licensee_id])
        notice_rows.append(
            {
                "id": notice_id,
                "revocation_id": revocation.id,
                "subject_id": revocation.subject_id,
                "licensee_id": licensee_id,
                "status": "pending",
                "deadline": deadline,
                "revoked_at": revocation.occurred_at,
                "sample_count": len(sample_ids),
                "covers_revocation_samples": whole,
                "created_at": now,
                "licensee_name": licensee_name,
                "trigger": trigger,
            }
        )
        if not whole:
            own_samples += [(notice_id, sid, *shared.ref(sid)) for sid in sorted(sample_ids)]
        model_rows += [{"notice_id": notice_id, **m} for m in models]
        license_rows += [{"notice_id": notice_id, **x} for x in licenses]
        per_notice.append((notice_id, licensee_id))
        created.append(
            notice_event_row(
                ctx.settings,
                licensee_id=licensee_id,
                notice_id=notice_id,
                revocation_id=revocation.id,
                subject_id=revocation.subject_id,
                notice_created=pb.NoticeCreated(
                    deadline=timestamp(deadline),
                    sample_count=len(sample_ids),
                    model_count=len(models),
                    licensee_name=licensee_name or "",
                    webhook_id=webhook_id(notice_id),
                    licenses=[pb.NoticeLicense(**x) for x in licenses],
                    models=[
                        pb.NoticeModel(
                            model_id=m["model_id"],
                            name=m["name"],
                            version=m["version"],
                            shard_ids=m["shard_ids"],
                            whole=m["scope"] == "whole",
                            license_ids=m["license_ids"],
                        )
                        for m in models
                    ],
                ),
            )
        )
    endpoints = endpoints_repo.active_ids_for_many(session, {lic for _, lic in per_notice})
    delivery_rows = [
        {
            "notice_id": notice_id,
            "endpoint_id": endpoint_id,
            "licensee_id": licensee_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for notice_id, licensee_id in per_notice
        for endpoint_id in endpoints.get(licensee_id, [])
    ]
    repository.insert_revocation_sample_sets(session, new_sets)
    repository.insert_created(
        session, notice_rows, model_rows, delivery_rows, [*created, *events], licenses=license_rows
    )
    repository.insert_notice_samples(session, own_samples)  # after the notices they reference
    return ids


def _model_fields(m: dict[str, Any]) -> dict[str, Any]:
    """A model to act on (from `rules.affected`) as its notice_models row, without the notice id."""
    shard_ids = sorted(str(s) for s in m.get("shard_ids") or [])
    return {
        "model_id": str(m["model_id"]),
        "name": str(m.get("name", "")),
        "version": str(m.get("version", "")),
        "shard_ids": shard_ids,
        "scope": model_scope(m.get("scope"), shard_ids),
        "license_ids": sorted(str(x) for x in m.get("license_ids") or []),
    }


def webhook_body(session: Session, ctx: AppContext, notice: Notice) -> dict[str, Any]:
    """The body is identical on every retry of one notice (its timestamp is the notice's creation)."""
    samples = repository.samples_page(session, notice, None, ctx.settings.worker_inline_samples)
    licenses = repository.licenses_of_many(session, [notice.id])[notice.id]
    return _body(ctx, notice, samples, repository.models_of(session, notice.id), licenses)


def webhook_bodies(
    session: Session, ctx: AppContext, notices: Sequence[repository.NoticeLike]
) -> dict[str, dict[str, Any]]:
    """`webhook_body` of each notice (by id), with one query for all their samples, one for all
    their models and one for all their licenses instead of three per notice."""
    distinct = list({n.id: n for n in notices}.values())
    samples = repository.first_samples_of(session, distinct, ctx.settings.worker_inline_samples)
    ids = [n.id for n in distinct]
    models = repository.models_of_many(session, ids)
    licenses = repository.licenses_of_many(session, ids)
    return {n.id: _body(ctx, n, samples[n.id], models[n.id], licenses[n.id]) for n in distinct}


class _ModelLike(Protocol):
    @property
    def model_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def shard_ids(self) -> list[str]: ...
    @property
    def scope(self) -> str | None: ...
    @property
    def license_ids(self) -> list[str] | None: ...


def _model_out(m: _ModelLike) -> dict[str, Any]:
    """A notice model as buyers read it (webhook and API alike)."""
    return {
        "model_id": m.model_id,
        "name": m.name,
        "version": m.version,
        "scope": model_scope(m.scope, m.shard_ids),
        "shard_ids": list(m.shard_ids),
        "license_ids": list(m.license_ids or []),
    }


def _license_out(x: repository.LicenseRow) -> dict[str, Any]:
    return {
        "license_id": x.license_id,
        "consent_id": x.consent_id,
        "purposes": list(x.purposes),
        "trigger": x.trigger,
        "sample_count": x.sample_count,
    }


def _body(
    ctx: AppContext,
    notice: repository.NoticeLike,
    samples: Sequence[repository.SampleRow],
    models: Sequence[_ModelLike],
    licenses: Sequence[repository.LicenseRow],
) -> dict[str, Any]:
    url = f"{ctx.settings.worker_public_url}/v1/notices/{notice.id}"
    return {
        "type": WEBHOOK_TYPE,
        "timestamp": iso(notice.created_at),
        "data": {
            "notice_id": notice.id,
            "revocation_id": notice.revocation_id,
            "licensee_id": notice.licensee_id,
            "licensee_name": notice.licensee_name,
            "trigger": trigger_name(notice.trigger),
            "deadline": iso(notice.deadline),
            "revoked_at": iso(notice.revoked_at),
            "samples": [{"sample_id": s.sample_id, "sha256": s.sha256, "kind": s.kind} for s in samples],
            "sample_count": notice.sample_count,
            "samples_truncated": notice.sample_count > len(samples),
            "samples_url": f"{url}/samples",
            "licenses": [_license_out(x) for x in licenses],
            "models": [_model_out(m) for m in models],
            "ack_url": f"{url}/ack",
        },
    }


FOLLOWUP_TYPES = {"reminder": "revocation.reminder", "overdue": "revocation.overdue"}


def followup_body(
    ctx: AppContext, notice: repository.NoticeLike, kind: str, at: dt.datetime
) -> dict[str, Any]:
    """A reminder's or an overdue notice's body: which notice, its deadline, where to read and
    answer it. `at` is when it was queued, so the body is identical on every retry."""
    url = f"{ctx.settings.worker_public_url}/v1/notices/{notice.id}"
    return {
        "type": FOLLOWUP_TYPES[kind],
        "timestamp": iso(at),
        "data": {
            "notice_id": notice.id,
            "revocation_id": notice.revocation_id,
            "licensee_id": notice.licensee_id,
            "deadline": iso(notice.deadline),
            "revoked_at": iso(notice.revoked_at),
            "overdue": kind == "overdue",
            "notice_url": url,
            "samples_url": f"{url}/samples",
            "ack_url": f"{url}/ack",
        },
    }


def to_out(session: Session, ctx: AppContext, notice: Notice, *, with_deliveries: bool = True) -> NoticeOut:
    samples = repository.samples_page(session, notice, None, ctx.settings.worker_inline_samples)
    deliveries = deliveries_repo.deliveries_of(session, notice.id) if with_deliveries else []
    models = repository.models_of(session, notice.id)
    return NoticeOut(
        id=notice.id,
        revocation_id=notice.revocation_id,
        licensee_id=notice.licensee_id,
        licensee_name=notice.licensee_name,
        trigger=trigger_name(notice.trigger),
        status=notice.status,
        deadline=notice.deadline,
        revoked_at=notice.revoked_at,
        created_at=notice.created_at,
        delivered_at=notice.delivered_at,
        acknowledged_at=notice.acknowledged_at,
        sample_count=notice.sample_count,
        samples=[SampleRef(sample_id=s.sample_id, sha256=s.sha256, kind=s.kind) for s in samples],
        samples_url=f"/v1/notices/{notice.id}/samples",
        licenses=[
            LicenseRef(**_license_out(x))
            for x in repository.licenses_of_many(session, [notice.id])[notice.id]
        ],
        models=[ModelRef(**_model_out(m)) for m in models],
        ack=notice.ack,
        answer=answer_out([m.model_id for m in models], notice.answer),
        reminded_at=notice.reminded_at,
        overdue_at=notice.overdue_at,
        deliveries=[
            DeliveryOut(
                endpoint_id=d.endpoint_id,
                kind=d.kind,
                status=d.status,
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                last_attempt_at=d.last_attempt_at,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
            )
            for d in deliveries
        ],
    )


def lock_for_change(session: Session, notice_id: str) -> Notice:
    """Lock a notice's deliveries, then the notice: the delivery recorder's order (deliveries,
    endpoints, notices), so an ack or a redeliver cannot deadlock with a delivery being recorded."""
    deliveries_repo.lock_deliveries_of_notice(session, notice_id)
    notice = repository.get(session, notice_id, lock=True)
    assert notice is not None  # the caller found it, and notices are never deleted
    return notice


def acknowledge(session: Session, ctx: AppContext, notice: Notice, body: AckIn) -> Notice:
    """Merge one ack into the notice's answer (notices/rules.py): acknowledged when everything it
    named is answered, else partially acknowledged; the event of either in the same transaction."""
    if notice.status == "acknowledged":
        return notice  # idempotent: a retried ack is not an error, and an answer stays final
    named = [m.model_id for m in repository.models_of(session, notice.id)]
    given = body.model_dump(mode="json", exclude_unset=True)
    evidence = given.get("evidence")
    ack = ack_rules.Ack(
        outcome=ack_rules.samples_outcome(body.status, body.samples_deleted, body.outcome),
        reason=body.reason,
        basis=body.basis,
        models=tuple(ack_rules.ModelAnswer(m.model_id, m.action, m.basis) for m in body.models),
        evidence=evidence,
        signature_verified=False,
    )
    wrong = ack_rules.problems(ack, body.samples_deleted, named, body.status)
    if wrong:
        unknown = any(msg == "not in this notice" for _, msg in wrong)
        raise Problem(
            422,
            "Some models are not part of this notice." if unknown else "The ack is not a valid answer.",
            errors=[field_error(f, msg) for f, msg in wrong],
        )
    if body.signature is not None:
        signed = {k: v for k, v in given.items() if k != "signature"}
        try:
            ackkeys.verify_detached(
                session, notice.licensee_id, body.signature, ack_rules.canonical_json(signed)
            )
        except ackkeys.BadSignature as exc:
            raise Problem(
                422,
                f"The ack's signature does not verify: {exc}.",
                errors=[field_error("body.signature", str(exc))],
            ) from None
        ack = dataclasses.replace(ack, signature_verified=True)
    now = utcnow()
    answer = ack_rules.merge(notice.answer, ack, iso(now))
    decision = ack_rules.decide(named, answer)
    notice.answer = answer
    notice.ack = {**given, "at": iso(now)}
    notice.status = ack_rules.next_status(notice.status, decision.complete)
    if decision.complete:
        notice.acknowledged_at = now
        deliveries_repo.cancel_pending_for_notice(session, notice.id)
    message = pb.NoticeAcknowledged(
        action=pb.ACK_ACTION_COMPLETED if decision.complete else pb.ACK_ACTION_UNSPECIFIED,
        model_ids=[m["model_id"] for m in answer["models"] if m["action"] != "exempt"],
        outcome=answer["outcome"] or "",
        basis=answer["reason"] or answer["basis"] or "",
        model_answers=[
            pb.ModelAnswer(model_id=m["model_id"], action=m["action"], basis=m["basis"] or "")
            for m in answer["models"]
        ],
        complete=decision.complete,
        evidence_digest=answer["evidence_digest"] or "",
        answered_at=timestamp(now),
        signature_verified=answer["signature_verified"],
        ack_digest=answer["ack_digest"],
    )
    field = "notice_acknowledged" if decision.complete else "notice_partially_acknowledged"
    publish_notice_event(session, ctx.settings, notice, **{field: message})
    return notice


def answer_out(named: Sequence[str], answer: Mapping[str, Any] | None) -> AnswerOut | None:
    if answer is None:
        return None
    decision = ack_rules.decide(named, answer)
    return AnswerOut(
        outcome=answer.get("outcome"),
        reason=answer.get("reason"),
        basis=answer.get("basis"),
        models=[ModelAnswerOut(**m) for m in answer.get("models", [])],
        missing_models=list(decision.missing_models),
        samples_answered=decision.samples_answered,
        complete=decision.complete,
        evidence=answer.get("evidence"),
        evidence_digest=answer.get("evidence_digest"),
        ack_digest=answer["ack_digest"],
        answered_at=answer["answered_at"],
        signature_verified=bool(answer.get("signature_verified")),
    )


def redeliver(session: Session, ctx: AppContext, notice: Notice) -> int:
    """Send the notice again to every active endpoint of its licensee (same webhook-id), subject
    to backoff (`rules.redeliver_at`): a delivery still retrying keeps its schedule, a finished one
    is due again at once but at most once per `worker_redeliver_interval_seconds`. Its attempts
    are kept (a failure backs off from where it was); its retry window starts again."""
    if notice.status == "acknowledged":
        raise Problem(409, "The notice is already acknowledged.")
    now = utcnow()
    endpoints = endpoints_repo.active_for(session, notice.licensee_id)
    if not endpoints:
        raise Problem(409, "No active endpoint to deliver to; register or re-enable one first.")
    count = 0
    interval = ctx.settings.worker_redeliver_interval_seconds
    by_endpoint = {
        d.endpoint_id: d for d in deliveries_repo.deliveries_of(session, notice.id) if d.kind == "notice"
    }
    for e in endpoints:
        d = by_endpoint.get(e.id)
        if d is None:
            continue
        at = delivery_rules.redeliver_at(d.status, d.last_attempt_at, now, interval)
        if at is not None:
            d.status = "pending"
            d.first_attempt_at = None
            d.next_attempt_at = at
            d.lease_until = None
            d.lease_owner = None
        count += 1
    count += deliveries_repo.add_deliveries(session, notice, endpoints, now)
    if notice.status == "failed":
        notice.status = "pending"
    return count


def redrive_dead(session: Session, licensee_id: str | None, endpoint_id: str | None) -> int:
    """Operator: put dead-lettered deliveries back in line. Those to a disabled endpoint stay dead
    (nothing claims a disabled endpoint's deliveries: pending, they would hang out of sight) until
    it is enabled again; those to a deleted endpoint or of an acknowledged notice, which nothing
    can or need deliver any more, are cancelled."""
    now = utcnow()
    count = 0
    after: int | None = None
    endpoint_status: dict[str, str | None] = {}
    while True:
        batch = dead_letter_repo.dead_deliveries(session, licensee_id, after, 500)
        if not batch:
            return count
        for d in batch:
            after = d.id
            if endpoint_id and d.endpoint_id != endpoint_id:
                continue
            if d.endpoint_id not in endpoint_status:
                endpoint = endpoints_repo.get(session, d.endpoint_id)
                endpoint_status[d.endpoint_id] = endpoint.status if endpoint is not None else None
            status = endpoint_status[d.endpoint_id]
            if status == "disabled":
                continue
            notice = repository.get(session, d.notice_id)
            if status is None or notice is None or notice.status == "acknowledged":
                d.status = "cancelled"
                continue
            d.status = "pending"
            d.attempts = 0
            d.first_attempt_at = None
            d.next_attempt_at = now
            d.lease_until = None
            if notice.status == "failed":
                notice.status = "pending"
            count += 1


def dead_letter_to_disabled(
    session: Session, ctx: AppContext, endpoint_ids: Sequence[str] | None, batch: int, now: dt.datetime
) -> tuple[int, int]:
    """One batch of `sweeps.dead_letter_disabled`, in the caller's transaction: (found, dead-lettered).
    A notice none of whose deliveries can still succeed turns `failed` (NoticeFailed)."""
    found = dead_letter_repo.pending_to_disabled(session, now, endpoint_ids, batch)
    if not found:
        return 0, 0
    # Nothing here waits for a lock (SKIP LOCKED), so no lock order can deadlock with the
    # recorder or an acknowledgement; what is skipped is found again next time.
    locked = repository.lock_notices_skip_locked(session, (n for _, n, _ in found))
    disabled = dead_letter_repo.share_disabled_skip_locked(session, (e for _, _, e in found))
    ids = [i for i, n, e in found if n in locked and e in disabled]
    dead = dead_letter_repo.dead_letter_pending(session, ids, now, "endpoint disabled")
    events: list[dict[str, Any]] = []
    for notice_id in sorted({n for _, n in dead}):
        notice = locked[notice_id]
        if notice.status != "pending" or notice.delivered_at is not None:
            continue
        if cannot_succeed(deliveries_repo.delivery_statuses(session, notice_id)):
            notice.status = "failed"
            events.append(
                notice_event_of(
                    ctx.settings,
                    notice,
                    notice_failed=pb.NoticeFailed(reason="undeliverable: endpoint disabled"),
                )
            )
    publish_many(session, events)
    return len(found), len(dead)


def mark_overdue(session: Session, ctx: AppContext, notice_id: str, now: dt.datetime) -> bool:
    """A notice past its deadline without a complete answer turns overdue (ops are told by the
    event and the status), and the licensee gets a `revocation.overdue` webhook at each active
    endpoint, in the caller's transaction; False when it no longer qualifies."""
    notice = repository.get(session, notice_id, lock=True)
    if notice is None or notice.status in ("acknowledged", "overdue") or notice.deadline >= now:
        return False
    notice.status = "overdue"
    notice.overdue_at = now
    endpoints = endpoints_repo.active_for(session, notice.licensee_id)
    deliveries_repo.add_deliveries(session, notice, endpoints, utcnow(), kind="overdue")
    publish_notice_event(
        session,
        ctx.settings,
        notice,
        notice_overdue=pb.NoticeOverdue(deadline=timestamp(notice.deadline)),
    )
    return True


def remind(session: Session, ctx: AppContext, notice_id: str, now: dt.datetime) -> bool:
    """Queue a `revocation.reminder` webhook to every active endpoint of an unanswered notice
    nearing its deadline (policy/rules.reminder_due), once, with NoticeReminded, in the caller's
    transaction; False when it does not qualify (any more)."""
    notice = repository.get(session, notice_id, lock=True)
    before = ctx.settings.worker_reminder_before_seconds
    if notice is None or not reminder_due(
        notice.status, notice.reminded_at, notice.created_at, notice.deadline, now, before
    ):
        return False
    notice.reminded_at = now
    endpoints = endpoints_repo.active_for(session, notice.licensee_id)
    deliveries_repo.add_deliveries(session, notice, endpoints, utcnow(), kind="reminder")
    publish_notice_event(
        session, ctx.settings, notice, notice_reminded=pb.NoticeReminded(deadline=timestamp(notice.deadline))
    )
    return True
