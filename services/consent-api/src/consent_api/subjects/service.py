"""Subjects: the pseudonymous identity behind a seller's token, its data key and its profile."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from consent_api.audit import service as audit
from consent_api.context import AppContext
from consent_api.keys import seal, unseal
from consent_api.subjects import repository
from consent_api.subjects.models import Subject
from rescind_common.auth import Principal


def current(session: Session, ctx: AppContext, principal: Principal, *, lock: bool = False) -> Subject:
    """The caller's subject row, created on first use. `lock=True` serialises the caller's writes."""
    sub_hash = ctx.master.sub_hash(principal.sub)
    subject = repository.by_sub_hash(session, sub_hash, lock=lock)
    if subject is None:
        repository.insert_if_missing(session, sub_hash)
        subject = repository.by_sub_hash(session, sub_hash, lock=lock)
    assert subject is not None
    return subject


def existing(session: Session, ctx: AppContext, principal: Principal) -> Subject | None:
    return repository.by_sub_hash(session, ctx.master.sub_hash(principal.sub))


def data_key(session: Session, ctx: AppContext, subject: Subject, *, create: bool) -> bytes | None:
    """The subject's AES key, or None once shredded (and not re-created)."""
    row = repository.get_key(session, subject.id)
    if row is None:
        if not create:
            return None
        row = repository.add_key(session, subject.id, ctx.master.new_wrapped_key(subject.id))
    return ctx.master.unwrap(row.wrapped_key, subject.id)


def seal_json(key: bytes, subject_id: str, purpose: str, value: Any) -> bytes:
    return seal(key, json.dumps(value, separators=(",", ":")).encode(), f"{purpose}:{subject_id}")


def open_json(key: bytes | None, subject_id: str, purpose: str, sealed: bytes | None) -> Any:
    if key is None or sealed is None:
        return None
    return json.loads(unseal(key, sealed, f"{purpose}:{subject_id}"))


def set_profile(session: Session, ctx: AppContext, subject: Subject, profile: dict[str, Any]) -> None:
    """Replace the profile (the caller holds the subject row lock). Audited like every other state
    change, with the names of the fields set, never their values: the log outlives erasure."""
    key = data_key(session, ctx, subject, create=True)
    assert key is not None
    subject.profile_sealed = seal_json(key, subject.id, "profile", profile)
    audit.append(
        session,
        subject,
        actor="subject",
        action="profile.set",
        entity_id=subject.id,
        data={"fields": sorted(profile)},
    )


def get_profile(session: Session, ctx: AppContext, subject: Subject) -> dict[str, Any] | None:
    key = data_key(session, ctx, subject, create=False)
    value = open_json(key, subject.id, "profile", subject.profile_sealed)
    return value if isinstance(value, dict) else None
