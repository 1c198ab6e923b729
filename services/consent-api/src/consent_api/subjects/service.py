"""Subjects: the pseudonymous identity behind a seller's token, its data key and its profile."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from consent_api.audit import service as audit
from consent_api.context import AppContext
from consent_api.keys import MasterKey, seal, unseal
from consent_api.subjects import repository
from consent_api.subjects.models import Subject, SubjectKey
from rescind_common.auth import Principal
from rescind_common.keyring import KeyUnavailable
from rescind_common.problems import Problem

log = logging.getLogger(__name__)


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
    """The subject's AES key, or None once shredded (and not re-created). A key wrapped under a
    master key this process does not hold is a 503 naming the key id, never a crash."""
    row = repository.get_key(session, subject.id)
    if row is None:
        if not create:
            return None
        row = repository.add_key(session, subject.id, *ctx.master.new_wrapped_key(subject.id))
    try:
        return ctx.master.unwrap(row.key_id, row.wrapped_key, subject.id)
    except KeyUnavailable as exc:
        log.error(
            "subject %s: its data key is %s; add that key to RESCIND_CONSENT_MASTER_KEYS "
            "(docs/operations.md, key rotation)",
            subject.id,
            exc,
        )
        raise Problem(
            503,
            f"This subject's data cannot be decrypted now: its key is {exc}. The operator must restore "
            "that master key.",
            type_="https://rescind.dev/problems/key-unavailable",
            key_id=exc.key_id,
        ) from None


def rewrap(master: MasterKey, rows: list[SubjectKey]) -> tuple[int, dict[str, int]]:
    """Rewrap locked key rows under the current master key. Returns how many were rewrapped and,
    per key id, how many could not be (their master key is not configured)."""
    done, unavailable = 0, dict[str, int]()
    for row in rows:
        try:
            plain = master.unwrap(row.key_id, row.wrapped_key, row.subject_id)
        except KeyUnavailable as exc:
            unavailable[exc.key_id] = unavailable.get(exc.key_id, 0) + 1
            continue
        row.key_id, row.wrapped_key = master.wrap(plain, row.subject_id)
        done += 1
    return done, unavailable


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
