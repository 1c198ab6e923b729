"""Registering samples: fingerprints and metadata only, never media."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from consent_api.audit import service as audit
from consent_api.context import AppContext
from consent_api.events import KIND_TO_PB, publish
from consent_api.samples import repository
from consent_api.samples.models import Sample
from consent_api.samples.schemas import SampleIn, SampleOut
from consent_api.subjects import service as subjects
from consent_api.subjects.models import Subject
from rescind_common.bulk import chunks
from rescind_common.db import utcnow
from rescind_common.ids import new_ids
from rescind_common.outbox import EVENT_REFS_CHUNK
from rescind_common.problems import Problem, field_error
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb


def register(
    session: Session, ctx: AppContext, subject: Subject, samples: list[SampleIn], *, field: str
) -> list[SampleOut]:
    """Insert samples for the (locked) subject, emit SampleRegistered, append to the audit log."""
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}

    def at(i: int) -> str:
        # `body.samples[3]` in a batch; just `body` for the single-sample endpoint.
        return field if field == "body" else f"{field}[{i}]"

    for i, s in enumerate(samples):
        if s.sha256 in seen:
            errors.append(field_error(f"{at(i)}.sha256", f"duplicate of {at(seen[s.sha256])}"))
        seen.setdefault(s.sha256, i)
    if errors:
        raise Problem(422, "The batch repeats a sha256.", errors=errors)
    clash = repository.existing_hashes(session, subject.id, list(seen))
    if clash:
        errors = [
            field_error(f"{at(seen[sha])}.sha256", "already registered", existing_id=sid)
            for sha, sid in clash.items()
        ]
        raise Problem(409, "A sample with this sha256 is already registered.", errors=errors)

    need_key = any(s.attributes for s in samples)
    key = subjects.data_key(session, ctx, subject, create=need_key) if need_key else None
    now = utcnow()
    ids = new_ids("smp", len(samples))
    rows: list[dict[str, Any]] = [
        {
            "id": sid,
            "subject_id": subject.id,
            "kind": s.kind,
            "sha256": s.sha256,
            "media_type": s.media_type,
            "attributes_sealed": subjects.seal_json(key, subject.id, "sample", s.attributes)
            if key and s.attributes
            else None,
            "created_at": now,
        }
        for sid, s in zip(ids, samples, strict=True)
    ]
    taken = repository.claim_hashes(session, subject.id, rows)
    if taken:
        # Said without naming the other subject. A second registration of the same content would
        # let it be licensed again under a second subject's consent after the first withdrew it.
        errors = [
            field_error(f"{at(seen[sha])}.sha256", "registered by another subject")
            for sha in sorted(taken, key=seen.__getitem__)
        ]
        raise Problem(
            409,
            "Content with this sha256 is registered by another subject.",
            type_="https://rescind.dev/problems/content-registered-by-another-subject",
            errors=errors,
        )
    repository.insert_many(session, rows)

    for part in chunks(rows, EVENT_REFS_CHUNK):
        refs = [pb.SampleRef(sample_id=r["id"], sha256=r["sha256"], kind=KIND_TO_PB[r["kind"]]) for r in part]
        publish(session, ctx.settings, subject.id, sample_registered=pb.SampleRegistered(samples=refs))
    audit.append(
        session,
        subject,
        actor="subject",
        action="samples.registered",
        entity_id=ids[0],
        data={"count": len(ids), "first_id": ids[0], "last_id": ids[-1]},
    )
    return [
        SampleOut(
            id=r["id"],
            kind=r["kind"],
            sha256=r["sha256"],
            media_type=r["media_type"],
            attributes=s.attributes,
            created_at=now,
        )
        for r, s in zip(rows, samples, strict=True)
    ]


def to_out(
    session: Session, ctx: AppContext, subject: Subject, sample: Sample, key: bytes | None
) -> SampleOut:
    return SampleOut(
        id=sample.id,
        kind=sample.kind,
        sha256=sample.sha256,
        media_type=sample.media_type,
        attributes=subjects.open_json(key, subject.id, "sample", sample.attributes_sealed),
        created_at=sample.created_at,
    )
