"""The tamper-evident audit log: one hash chain per subject.

entry.hash = sha256(prev_hash || canonical JSON of the entry's fields). Appends
happen with the subject row locked (see subjects.service.lock), so a chain never
forks; the verifier recomputes every hash and checks each link and the head.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from consent_api.audit import repository
from consent_api.audit.models import AuditEntry
from consent_api.subjects.models import Subject
from rescind_common import bulk
from rescind_common.db import utcnow

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str,
    *,
    subject_id: str,
    seq: int,
    at: dt.datetime,
    actor: str,
    action: str,
    entity_id: str,
    data: dict[str, Any],
) -> str:
    body = json.dumps(
        {
            "subject_id": subject_id,
            "seq": seq,
            "at": at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": actor,
            "action": action,
            "entity_id": entity_id,
            "data": data,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(prev_hash.encode() + body.encode()).hexdigest()


def append(
    session: Session, subject: Subject, *, actor: str, action: str, entity_id: str, data: dict[str, Any]
) -> AuditEntry:
    """Append to the subject's chain. The caller holds the subject row lock."""
    entry, statements = append_statements(subject, actor=actor, action=action, entity_id=entity_id, data=data)
    bulk.execute(session, statements)
    return entry


def append_statements(
    subject: Subject, *, actor: str, action: str, entity_id: str, data: dict[str, Any]
) -> tuple[AuditEntry, list[bulk.Write]]:
    """The entry and the writes that append it (the entry, the new chain head), for the caller to
    execute in its transaction, alone or folded with its own writes (`rescind_common.bulk.execute`).
    The caller holds the subject row lock and must execute them: the loaded subject already shows
    the new head."""
    seq = subject.audit_seq + 1
    at = utcnow()
    digest = entry_hash(
        subject.audit_head,
        subject_id=subject.id,
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        entity_id=entity_id,
        data=data,
    )
    values: dict[str, Any] = {
        "subject_id": subject.id,
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "entity_id": entity_id,
        "data": data,
        "prev_hash": subject.audit_head,
        "hash": digest,
    }
    statements: list[bulk.Write] = [
        repository.entry_insert(values),
        repository.head_update(subject.id, seq, digest),
    ]
    # The row is updated by those; keep the loaded subject in step without a second UPDATE at flush.
    set_committed_value(subject, "audit_seq", seq)
    set_committed_value(subject, "audit_head", digest)
    return AuditEntry(**values), statements


def verify(session: Session) -> dict[str, Any]:
    heads = {s.id: (s.audit_seq, s.audit_head) for s in session.scalars(select(Subject))}
    problems: list[dict[str, Any]] = []
    checked = 0
    current: str | None = None
    prev = GENESIS
    expected_seq = 1
    seen: dict[str, tuple[int, str]] = {}

    for e in repository.iter_all(session):
        if e.subject_id != current:
            current, prev, expected_seq = e.subject_id, GENESIS, 1
        checked += 1
        if e.seq != expected_seq:
            problems.append(
                {"subject_id": e.subject_id, "seq": e.seq, "problem": f"expected seq {expected_seq}"}
            )
        if e.prev_hash != prev:
            problems.append(
                {"subject_id": e.subject_id, "seq": e.seq, "problem": "broken link to previous entry"}
            )
        recomputed = entry_hash(
            e.prev_hash,
            subject_id=e.subject_id,
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            action=e.action,
            entity_id=e.entity_id,
            data=e.data,
        )
        if recomputed != e.hash:
            problems.append({"subject_id": e.subject_id, "seq": e.seq, "problem": "entry was altered"})
        prev, expected_seq = e.hash, e.seq + 1
        seen[e.subject_id] = (e.seq, e.hash)

    for subject_id, (seq, head) in heads.items():
        if seen.get(subject_id, (0, GENESIS)) != (seq, head):
            problems.append(
                {
                    "subject_id": subject_id,
                    "seq": seq,
                    "problem": "chain head does not match (entries removed?)",
                }
            )
    return {
        "ok": not problems,
        "subjects_checked": len(heads),
        "entries_checked": checked,
        "problems": problems,
    }
