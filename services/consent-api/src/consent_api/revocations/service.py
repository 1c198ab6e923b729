"""Withdrawing consent. One revocation can touch many consents; each touched consent
gets its ConsentRevoked event(s) in the outbox, in the same transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from consent_api.audit import service as audit
from consent_api.consents import repository as consents_repo
from consent_api.consents.models import Consent
from consent_api.context import AppContext
from consent_api.events import event_trigger, outbox_insert
from consent_api.metrics import count_revocation
from consent_api.notices import repository as notices_repo
from consent_api.notices.models import RevocationNotice
from consent_api.notices.rules import is_overdue
from consent_api.notices.service import overall_status
from consent_api.revocations import repository
from consent_api.revocations.models import Revocation
from consent_api.revocations.schemas import NoticeModelOut, NoticeOut, RevocationIn, RevocationOut
from consent_api.samples import repository as samples_repo
from consent_api.subjects import service as subjects
from consent_api.subjects.models import Subject
from rescind_common import bulk
from rescind_common.bulk import chunks
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.outbox import EVENT_IDS_CHUNK
from rescind_common.problems import Problem, field_error
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb


@dataclass
class Target:
    """What to withdraw from one consent: some samples (None = all still active) or one purpose."""

    consent: Consent
    sample_ids: set[str] | None = None
    purpose: str | None = None
    # Withdraw one licensee from a consent open to any licensee; the consent stays active.
    only_licensee: str | None = None
    # The consent's samples not yet revoked, when the caller loaded them with the consent.
    active: list[str] | None = None
    withdrawn: list[str] = field(default_factory=list)


def revoke(
    session: Session,
    ctx: AppContext,
    subject: Subject,
    targets: list[Target],
    *,
    scope: str,
    trigger: str = "subject",
    consent_id: str | None = None,
    licensee_id: str | None = None,
    purpose: str | None = None,
    reason: str | None = None,
    end_status: str = "revoked",
    revocation_id: str | None = None,
) -> Revocation:
    """Record the revocation, end or shrink each target consent, enqueue events, audit. Subject is locked.
    `revocation_id` lets a caller name the revocation in an event it enqueues first (ConsentExpired)."""
    now = utcnow()
    rev_id = revocation_id or new_id("rev")
    reason_sealed: bytes | None = None
    if reason:
        key = subjects.data_key(session, ctx, subject, create=True)
        assert key is not None
        reason_sealed = subjects.seal_json(key, subject.id, "reason", reason)

    # Every target's samples not yet revoked, in one query (unless the caller loaded them).
    loaded = consents_repo.active_sample_ids_of(session, [t.consent.id for t in targets if t.active is None])
    touched: list[tuple[Target, list[str], list[str], bool]] = []
    target_writes: list[bulk.Write] = []
    for t in targets:
        c = t.consent
        active = t.active if t.active is not None else loaded[c.id]
        if not active:
            continue
        live_purposes = [p for p in c.purposes if p not in (c.revoked_purposes or [])]
        marked: list[str] = []
        changes: dict[str, Any] = {}
        if t.only_licensee is not None:
            # One licensee withdrawn from a consent open to any licensee: it stays open to others.
            if t.only_licensee in (c.excluded_licensees or []):
                continue
            changes["excluded_licensees"] = [*(c.excluded_licensees or []), t.only_licensee]
            withdrawn_samples, withdrawn_purposes, ended = active, live_purposes, False
        elif t.purpose is not None:
            # Withdraw one purpose for every sample; the consent lives on for its other purposes.
            if t.purpose not in live_purposes:
                continue
            changes["revoked_purposes"] = [*(c.revoked_purposes or []), t.purpose]
            withdrawn_samples, withdrawn_purposes = active, [t.purpose]
            ended = len(live_purposes) == 1
            if ended:
                marked = active
                changes["active_sample_count"] = 0
        else:
            withdrawn_samples = active if t.sample_ids is None else [s for s in active if s in t.sample_ids]
            if not withdrawn_samples:
                continue
            withdrawn_purposes = live_purposes
            marked = withdrawn_samples
            changes["active_sample_count"] = len(active) - len(withdrawn_samples)
            ended = changes["active_sample_count"] == 0
        if ended:
            changes.update(status=end_status, ended_at=now)
        # Written by the UPDATE below; the loaded object shows them without a second UPDATE at flush.
        for name, value in changes.items():
            set_committed_value(c, name, value)
        target_writes.append(consents_repo.consent_update(c))
        for part in chunks(marked):
            target_writes.append(consents_repo.mark_revoked(c.id, part, rev_id, now))
        for part in chunks(withdrawn_samples):
            target_writes.append(repository.items_insert(rev_id, c.id, part))
        touched.append((t, withdrawn_samples, withdrawn_purposes, ended))

    values: dict[str, Any] = {
        "id": rev_id,
        "subject_id": subject.id,
        "scope": scope,
        "trigger": trigger,
        "consent_id": consent_id,
        "licensee_id": licensee_id,
        "purpose": purpose,
        "reason_sealed": reason_sealed,
        "status": "pending" if touched else "completed",
        "consent_ids": [t.consent.id for t, *_ in touched],
        "sample_count": len({s for _, samples, _, _ in touched for s in samples}),
        "created_at": now,
    }
    revocation = Revocation(**values)
    # Written once, complete (no insert-then-update), before its items (they reference it).
    writes = [repository.row_insert(values), *target_writes]
    pb_trigger = event_trigger(trigger, scope)
    for t, samples, purposes, ended in touched:
        parts = list(chunks(samples, EVENT_IDS_CHUNK))
        for index, part in enumerate(parts):
            _, outbox = outbox_insert(
                ctx.settings,
                subject.id,
                consent_revoked=pb.ConsentRevoked(
                    revocation_id=rev_id,
                    consent_id=t.consent.id,
                    sample_ids=part,
                    consent_ended=ended,
                    purposes=purposes,
                    licensee_id=t.consent.licensee_id or "",
                    trigger=pb_trigger,
                    chunk_index=index,
                    chunk_count=len(parts),
                    consent_count=len(touched),
                    only_licensee_id=t.only_licensee or "",
                ),
            )
            writes.append(outbox)
    _, audit_writes = audit.append_statements(
        subject,
        actor="system" if trigger == "expiry" else "subject",
        action="consent.revoked",
        entity_id=rev_id,
        data={
            "scope": scope,
            "trigger": trigger,
            "consent_ids": values["consent_ids"],
            "sample_count": values["sample_count"],
            "licensee_id": licensee_id,
            "purpose": purpose,
        },
    )
    # One consent, few samples (the usual revocation): every write in one round trip on PostgreSQL.
    # None reads another's rows: the items are selected by sample id, not by revoked_at.
    bulk.execute(session, [*writes, *audit_writes])
    count_revocation(session, trigger)
    return revocation


def revoke_consent(
    session: Session,
    ctx: AppContext,
    subject: Subject,
    consent_id: str,
    sample_ids: list[str] | None,
    reason: str | None,
) -> Revocation:
    consent, active = consents_repo.get_with_active_sample_ids(session, subject.id, consent_id)
    if consent is None:
        raise Problem(404, f"No consent {consent_id}.")
    if consent.status != "active":
        raise Problem(
            409, f"Consent {consent_id} is already {consent.status}.", status_of_consent=consent.status
        )
    wanted: set[str] | None = None
    if sample_ids:
        covered = set(consents_repo.sample_ids(session, consent.id))
        unknown = [(i, s) for i, s in enumerate(sample_ids) if s not in covered]
        if unknown:
            raise Problem(
                422,
                "Some samples are not covered by this consent.",
                errors=[
                    field_error(f"body.sample_ids[{i}]", "not in this consent", value=s) for i, s in unknown
                ],
            )
        wanted = set(sample_ids)
    return revoke(
        session,
        ctx,
        subject,
        [Target(consent, sample_ids=wanted, active=active)],
        scope="consent",
        consent_id=consent_id,
        reason=reason,
    )


SCOPE_FIELDS = {"licensee": "licensee_id", "purpose": "purpose", "samples": "sample_ids"}


def check_scope_fields(body: RevocationIn) -> None:
    for scope, name in SCOPE_FIELDS.items():
        value = getattr(body, name)
        if body.scope == scope and not value:
            raise Problem(
                422, f"scope '{scope}' needs {name}.", errors=[field_error(f"body.{name}", "required")]
            )
        if body.scope != scope and value:
            raise Problem(
                422,
                f"{name} is only allowed with scope '{scope}'.",
                errors=[field_error(f"body.{name}", f"only with scope '{scope}'")],
            )


def revoke_by_scope(session: Session, ctx: AppContext, subject: Subject, body: RevocationIn) -> Revocation:
    check_scope_fields(body)
    active = consents_repo.active_for_subject(session, subject.id)
    targets: list[Target]
    if body.scope == "all":
        targets = [Target(c) for c in active]
    elif body.scope == "licensee":
        # Consents granted to that licensee end; consents open to any licensee exclude it from now on.
        targets = [
            Target(c) if c.licensee_id == body.licensee_id else Target(c, only_licensee=body.licensee_id)
            for c in active
            if c.licensee_id in (body.licensee_id, None)
        ]
    elif body.scope == "purpose":
        targets = [Target(c, purpose=body.purpose) for c in active if body.purpose in c.purposes]
    else:
        assert body.sample_ids is not None
        ids = list(dict.fromkeys(body.sample_ids))
        owned = samples_repo.owned_ids(session, subject.id, ids)
        unknown = [(i, s) for i, s in enumerate(body.sample_ids) if s not in owned]
        if unknown:
            raise Problem(
                422,
                "Unknown sample ids.",
                errors=[field_error(f"body.sample_ids[{i}]", "unknown sample", value=s) for i, s in unknown],
            )
        by_consent = consents_repo.active_consents_with_samples(session, subject.id, ids)
        targets = [Target(c, sample_ids=by_consent[c.id]) for c in active if c.id in by_consent]
    return revoke(
        session,
        ctx,
        subject,
        targets,
        scope=body.scope,
        licensee_id=body.licensee_id,
        purpose=body.purpose,
        reason=body.reason,
    )


def to_out(
    revocation: Revocation, notices: list[NoticeOut] | None = None, status: str | None = None
) -> RevocationOut:
    return RevocationOut(
        id=revocation.id,
        status=status or revocation.status,
        scope=revocation.scope,
        trigger=revocation.trigger,
        consent_id=revocation.consent_id,
        licensee_id=revocation.licensee_id,
        purpose=revocation.purpose,
        consent_ids=revocation.consent_ids,
        sample_count=revocation.sample_count,
        created_at=revocation.created_at,
        notices=notices or [],
    )


def to_out_with_notices(session: Session, revocations: Sequence[Revocation]) -> list[RevocationOut]:
    """Revocations with each licensee told and the overall status (from the notice topic)."""
    ids = [r.id for r in revocations]
    by_revocation = notices_repo.for_revocations(session, ids)
    resolved = notices_repo.resolutions(session, ids)
    now = utcnow()
    out = []
    for r in revocations:
        rows = by_revocation.get(r.id, [])
        notices = [notice_out(n, now) for n in rows]
        out.append(to_out(r, notices, overall_status(r.status, resolved.get(r.id), rows)))
    return out


def notice_models(n: RevocationNotice) -> list[NoticeModelOut]:
    """The models a holder was told to act on, each with the holder's answer (if any); models the
    holder answered for without being named come last."""
    answers = {a["model_id"]: a for a in n.model_answers or []}
    out = []
    for m in n.models or []:
        answer = answers.pop(m["model_id"], {})
        out.append(
            NoticeModelOut(
                model_id=m["model_id"],
                name=m.get("name") or None,
                version=m.get("version") or None,
                scope="whole" if m.get("whole", True) else "shards",
                shard_ids=[] if m.get("whole", True) else m.get("shard_ids", []),
                action=answer.get("action"),
                basis=answer.get("basis"),
            )
        )
    for model_id, answer in answers.items():
        out.append(
            NoticeModelOut(
                model_id=model_id, scope="whole", action=answer.get("action"), basis=answer.get("basis")
            )
        )
    return out


def notice_out(n: RevocationNotice, now: dt.datetime) -> NoticeOut:
    return NoticeOut(
        licensee_id=n.licensee_id,
        status=n.status,
        updated_at=n.updated_at,
        notice_id=n.notice_id,
        licensee_name=n.licensee_name,
        told_at=n.told_at,
        delivered_at=n.delivered_at,
        delivery_status_code=n.delivery_status_code,
        webhook_id=n.webhook_id,
        final_status=n.outcome,
        basis=n.basis,
        models=notice_models(n),
        evidence_digest=n.evidence_digest,
        ack_digest=n.ack_digest,
        answered_at=n.answered_at,
        deadline=n.deadline,
        overdue=is_overdue(n.status, {"overdue_at": n.overdue_at, "deadline": n.deadline}, now),
    )
