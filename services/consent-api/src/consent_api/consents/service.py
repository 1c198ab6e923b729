"""Granting consent: the record, its signed receipt, its event and its audit entry."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from consent_api.audit import service as audit
from consent_api.consents import repository
from consent_api.consents.models import Consent
from consent_api.consents.schemas import Compensation, ConsentDetail, ConsentIn, ConsentOut
from consent_api.context import AppContext
from consent_api.events import outbox_insert, timestamp
from consent_api.receipts import claims as receipt_claims
from consent_api.samples import repository as samples_repo
from consent_api.subjects import service as subjects
from consent_api.subjects.models import Subject
from rescind_common import bulk
from rescind_common.auth import Principal
from rescind_common.bulk import IN_LIST_CHUNK
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.problems import Problem, field_error
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb


def grant_as(session: Session, ctx: AppContext, principal: Principal, body: ConsentIn) -> ConsentDetail:
    """Grant for the caller's subject (locked). Naming a few samples, the subject and the samples'
    fingerprints are read in one query."""
    ids = list(dict.fromkeys(body.sample_ids or []))
    if ids and not body.all_samples and len(ids) <= IN_LIST_CHUNK:
        sub_hash = subjects.sub_hash(session, ctx, principal)
        subject, found = samples_repo.subject_with_fingerprints(session, sub_hash, ids)
        if subject is not None:
            return grant(session, ctx, subject, body, found=found)
    return grant(session, ctx, subjects.current(session, ctx, principal, lock=True), body)


def grant(
    session: Session,
    ctx: AppContext,
    subject: Subject,
    body: ConsentIn,
    *,
    found: dict[str, tuple[str, str]] | None = None,
) -> ConsentDetail:
    """Grant; the answer is built from what was written (nothing is read back). `found`: the
    fingerprints of the named samples, when the caller read them with the subject."""
    now = utcnow()
    if body.expires_at is not None and body.expires_at <= now:
        raise Problem(
            422, "expires_at must be in the future.", errors=[field_error("body.expires_at", "in the past")]
        )
    purposes = list(dict.fromkeys(body.purposes))
    if body.all_samples and body.sample_ids:
        raise Problem(
            422,
            "Give sample_ids or all_samples=true, not both.",
            errors=[field_error("body.sample_ids", "not allowed with all_samples=true")],
        )
    if not body.all_samples and not body.sample_ids:
        raise Problem(
            422,
            "sample_ids must name at least one sample (or set all_samples=true).",
            errors=[field_error("body.sample_ids", "required")],
        )

    if body.all_samples:
        sample_ids = samples_repo.all_ids(session, subject.id)
        if not sample_ids:
            raise Problem(
                422,
                "The subject has no registered samples.",
                errors=[field_error("body.all_samples", "no samples registered")],
            )
    else:
        assert body.sample_ids is not None
        sample_ids = list(dict.fromkeys(body.sample_ids))
        limit = ctx.settings.consent_max_sample_ids
        if len(sample_ids) > limit:
            raise Problem(413, f"A consent names at most {limit} samples.", limit=limit)
    if found is None:
        found = samples_repo.fingerprints(session, subject.id, sample_ids)
    if len(found) != len(sample_ids):
        index = {sid: i for i, sid in enumerate(body.sample_ids or [])}
        missing = [sid for sid in sample_ids if sid not in found]
        raise Problem(
            422,
            f"Unknown sample ids: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}.",
            type_="https://rescind.dev/problems/unknown-samples",
            errors=[
                field_error(f"body.sample_ids[{index[sid]}]", "unknown sample", value=sid) for sid in missing
            ],
        )

    consent_id = new_id("cns")
    receipt_id = new_id("rcp")
    compensation = (
        {"amount": str(body.compensation.amount), "currency": body.compensation.currency}
        if body.compensation
        else None
    )
    samples = [found[sid] for sid in sample_ids]
    claims = receipt_claims.build(
        ctx.settings,
        receipt_id=receipt_id,
        consent_id=consent_id,
        subject_id=subject.id,
        issued_at=now,
        purposes=purposes,
        licensee_id=body.licensee_id,
        expires_at=body.expires_at,
        compensation=compensation,
        sample_ids=sample_ids,
        sample_sha256s=[sha for sha, _ in samples],
        kinds=[kind for _, kind in samples],
    )
    row: dict[str, Any] = {
        "id": consent_id,
        "subject_id": subject.id,
        "status": "active",
        "purposes": purposes,
        "revoked_purposes": [],
        "excluded_licensees": [],
        "licensee_id": body.licensee_id,
        "expires_at": body.expires_at,
        "compensation": compensation,
        "sample_count": len(sample_ids),
        "active_sample_count": len(sample_ids),
        "receipt_id": receipt_id,
        "receipt": ctx.signer.sign(claims),
        "created_at": now,
        "ended_at": None,
    }
    granted = pb.ConsentGranted(
        consent_id=consent_id,
        sample_ids=sample_ids,
        purposes=purposes,
        licensee_id=body.licensee_id or "",
        receipt_id=receipt_id,
    )
    if body.expires_at:
        granted.expires_at.CopyFrom(timestamp(body.expires_at))
    _, outbox = outbox_insert(ctx.settings, subject.id, consent_granted=granted)
    _, audit_writes = audit.append_statements(
        subject,
        actor="subject",
        action="consent.granted",
        entity_id=consent_id,
        data={
            "purposes": purposes,
            "licensee_id": body.licensee_id,
            "sample_count": len(sample_ids),
            "expires_at": body.expires_at.isoformat() if body.expires_at else None,
            "receipt_id": receipt_id,
        },
    )
    # The consent, its sample (when one; more go in one executemany after), its event and its audit
    # entry in one round trip on PostgreSQL (none of these writes reads another's rows).
    writes: list[bulk.Write] = [repository.row_insert(row)]
    if len(sample_ids) == 1:
        writes.append(repository.sample_insert(consent_id, sample_ids[0]))
    bulk.execute(session, [*writes, outbox, *audit_writes])
    if len(sample_ids) > 1:
        repository.add_samples(session, consent_id, sample_ids)  # after the consent row (foreign key)
    # As GET /v1/consents/{id} would answer (to_out + to_detail, without an ORM object in between):
    # sample ids in id order, none revoked yet.
    return ConsentDetail(
        id=consent_id,
        status="active",
        purposes=purposes,
        revoked_purposes=[],
        licensee_id=body.licensee_id,
        excluded_licensees=[],
        expires_at=body.expires_at,
        compensation=Compensation(**compensation) if compensation else None,
        sample_count=len(sample_ids),
        active_sample_count=len(sample_ids),
        created_at=now,
        ended_at=None,
        receipt_id=receipt_id,
        receipt=row["receipt"],
        sample_ids=sorted(sample_ids),
        revoked_sample_ids=[],
    )


def to_out(consent: Consent) -> ConsentOut:
    return ConsentOut(
        id=consent.id,
        status=consent.status,
        purposes=consent.purposes,
        revoked_purposes=consent.revoked_purposes or [],
        licensee_id=consent.licensee_id,
        excluded_licensees=consent.excluded_licensees or [],
        expires_at=consent.expires_at,
        compensation=Compensation(**consent.compensation) if consent.compensation else None,
        sample_count=consent.sample_count,
        active_sample_count=consent.active_sample_count,
        created_at=consent.created_at,
        ended_at=consent.ended_at,
        receipt_id=consent.receipt_id,
        receipt=consent.receipt,
    )


def to_detail(session: Session, consent: Consent) -> ConsentDetail:
    return ConsentDetail(
        **to_out(consent).model_dump(),
        sample_ids=repository.sample_ids(session, consent.id),
        revoked_sample_ids=repository.sample_ids(session, consent.id, active=False),
    )
