"""Rights requests: access (a full machine-readable export) and erasure (revoke all, then shred)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from consent_api import recipients
from consent_api.audit import repository as audit_repo
from consent_api.audit import service as audit
from consent_api.consents import repository as consents_repo
from consent_api.consents import service as consents
from consent_api.context import AppContext
from consent_api.events import publish
from consent_api.notices import repository as notices_repo
from consent_api.notices.service import erasure_status
from consent_api.revocations import repository as revocations_repo
from consent_api.revocations import service as revocations
from consent_api.rights import repository
from consent_api.rights.models import RightsRequest
from consent_api.samples import service as samples
from consent_api.subjects import repository as subjects_repo
from consent_api.subjects import service as subjects
from consent_api.subjects.models import Subject
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

EXPORT_FORMAT = "rescind.subject-export.v1"


def export(session: Session, ctx: AppContext, subject: Subject) -> dict[str, Any]:
    key = subjects.data_key(session, ctx, subject, create=False)
    revs = repository.all_revocations(session, subject.id)
    out_revs = []
    for r, out in zip(revs, revocations.to_out_with_notices(session, revs), strict=True):
        item = out.model_dump(mode="json")
        item["reason"] = subjects.open_json(key, subject.id, "reason", r.reason_sealed)
        item["items"] = [{"consent_id": c, "sample_id": s} for c, s in revocations_repo.items(session, r.id)]
        out_revs.append(item)
    consents_out = []
    for c in repository.all_consents(session, subject.id):
        detail = consents.to_detail(session, c).model_dump(mode="json")
        consents_out.append(detail)
    entries = []
    after = 0
    while True:
        batch = audit_repo.entries_for(session, subject.id, after_seq=after)
        if not batch:
            break
        entries += [
            {
                "seq": e.seq,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "entity_id": e.entity_id,
                "data": e.data,
                "hash": e.hash,
            }
            for e in batch
        ]
        after = batch[-1].seq
    all_samples = repository.all_samples(session, subject.id)
    requests = repository.all_requests(session, subject.id)
    states = statuses(session, requests)
    return {
        "format": EXPORT_FORMAT,
        "generated_at": utcnow().isoformat(),
        "controller": {
            "name": ctx.settings.consent_controller_name,
            "contact": ctx.settings.consent_controller_contact,
            "address": ctx.settings.consent_controller_address,
            "email": ctx.settings.consent_controller_email,
            "phone": ctx.settings.consent_controller_phone,
            "url": ctx.settings.consent_controller_url,
        },
        "subject": {
            "id": subject.id,
            "created_at": subject.created_at.isoformat(),
            "erased_at": subject.erased_at.isoformat() if subject.erased_at else None,
            "profile": subjects.get_profile(session, ctx, subject),
        },
        "samples": [
            samples.to_out(session, ctx, subject, s, key).model_dump(mode="json") for s in all_samples
        ],
        "consents": consents_out,
        "revocations": out_revs,
        "rights_requests": [
            {"id": r.id, "type": r.type, "status": states[r.id][0], "created_at": r.created_at.isoformat()}
            for r in requests
        ],
        # Which licensees received which samples, and which of their models contain them.
        "recipients": recipients.lookup(ctx.settings, [s.id for s in all_samples]),
        "audit_log": entries,
    }


def access(session: Session, ctx: AppContext, subject: Subject) -> RightsRequest:
    now = utcnow()
    req = RightsRequest(
        id=new_id("rr"),
        subject_id=subject.id,
        type="access",
        status="completed",
        created_at=now,
        completed_at=now,
    )
    session.add(req)
    audit.append(session, subject, actor="subject", action="rights.access", entity_id=req.id, data={})
    return req


def erase(session: Session, ctx: AppContext, subject: Subject) -> RightsRequest:
    """Revoke everything (holders are told), then destroy the subject's key: its personal data
    becomes unreadable everywhere, while the pseudonymous revocation record stays."""
    now = utcnow()
    active = consents_repo.active_for_subject(session, subject.id)
    revocation = revocations.revoke(
        session, ctx, subject, [revocations.Target(c) for c in active], scope="all", trigger="erasure"
    )
    sample_count = len(repository.all_samples(session, subject.id))
    subjects_repo.delete_key(session, subject.id)
    subject.profile_sealed = None
    subject.erased_at = now
    repository.shred_sealed_columns(session, subject.id)
    publish(
        session,
        ctx.settings,
        subject.id,
        subject_erased=pb.SubjectErased(revocation_id=revocation.id, sample_count=sample_count),
    )
    req = RightsRequest(
        id=new_id("rr"),
        subject_id=subject.id,
        type="erasure",
        # What the holders do decides the status shown (`statuses`); the stored one is the request's.
        status="completed" if revocation.status == "completed" else "in_progress",
        created_at=now,
        completed_at=now if revocation.status == "completed" else None,
        revocation_id=revocation.id,
    )
    session.add(req)
    audit.append(
        session,
        subject,
        actor="subject",
        action="subject.erased",
        entity_id=req.id,
        data={"revocation_id": revocation.id, "sample_count": sample_count},
    )
    return req


def statuses(session: Session, requests: list[RightsRequest]) -> dict[str, tuple[str, dt.datetime | None]]:
    """Each request's status and completion time: an access request is done when made; an erasure
    follows its revocation's holders (`notices.service.erasure_status`)."""
    out: dict[str, tuple[str, dt.datetime | None]] = {}
    erasures = [r for r in requests if r.type == "erasure" and r.revocation_id]
    ids = [r.revocation_id for r in erasures if r.revocation_id]
    revs = {r.id: r for r in revocations_repo.by_ids(session, ids)}
    notices = notices_repo.for_revocations(session, ids)
    resolved = notices_repo.resolutions(session, ids)
    now = utcnow()
    for req in requests:
        rev = revs.get(req.revocation_id or "") if req.type == "erasure" else None
        if rev is None:
            out[req.id] = ("completed", req.completed_at)
            continue
        status, done = erasure_status(rev.status, resolved.get(rev.id), notices.get(rev.id, []), now)
        out[req.id] = (status, (done or req.completed_at) if status != "in_progress" else None)
    return out
