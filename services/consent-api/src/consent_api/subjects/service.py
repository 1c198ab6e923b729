"""Subjects: the pseudonymous identity behind a seller's token, its data key and its profile."""

from __future__ import annotations

import json
import logging
from typing import Any, NoReturn

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


PEPPER_CHECK = "subject-pepper"


def sub_hash(session: Session, ctx: AppContext, principal: Principal) -> str:
    """The keyed hash the caller's subject is stored under, once this process's pepper is known to
    be the database's (the first call per process checks it)."""
    if not ctx.master.pepper_verified:
        verify_pepper(session, ctx.master)
    return ctx.master.sub_hash(principal.sub)


def verify_pepper(session: Session, master: MasterKey) -> None:
    """Refuse (503, logged) a pepper other than the one the database's subjects are stored under:
    with another pepper every seller would silently become a new subject. The first process records
    the check value; a database with subjects but no check value predates it, and its subjects were
    hashed with the legacy pepper of master key `v1`."""
    check = master.pepper_check()
    held = repository.key_check(session, PEPPER_CHECK)
    if held is None:
        if repository.any_subject(session) and master.pepper_is_legacy() is False:
            _pepper_mismatch(
                "this database's subjects were stored under the legacy pepper of master key 'v1'"
            )
        repository.add_key_check(session, PEPPER_CHECK, check)
        held = repository.key_check(session, PEPPER_CHECK)
    if held != check:
        _pepper_mismatch("it is not the pepper this database's subjects were stored under")
    master.pepper_verified = True


def _pepper_mismatch(why: str) -> NoReturn:
    log.error(
        "refusing the subject pepper: %s. Set RESCIND_CONSENT_SUBJECT_PEPPER to that pepper "
        "(`consent-api keys legacy-pepper` prints the legacy one); never a new one",
        why,
    )
    raise Problem(
        503,
        "The service is misconfigured: its subject pepper does not match its data. The operator "
        "has been told.",
        type_="https://rescind.dev/problems/pepper-mismatch",
    )


def current(session: Session, ctx: AppContext, principal: Principal, *, lock: bool = False) -> Subject:
    """The caller's subject row, created on first use. `lock=True` serialises the caller's writes."""
    sub_hash_ = sub_hash(session, ctx, principal)
    subject = repository.by_sub_hash(session, sub_hash_, lock=lock)
    if subject is None:
        repository.insert_if_missing(session, sub_hash_)
        subject = repository.by_sub_hash(session, sub_hash_, lock=lock)
    assert subject is not None
    return subject


def existing(session: Session, ctx: AppContext, principal: Principal) -> Subject | None:
    return repository.by_sub_hash(session, sub_hash(session, ctx, principal))


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
