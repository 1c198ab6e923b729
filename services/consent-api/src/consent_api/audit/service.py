"""The tamper-evident audit log: one hash chain per subject.

entry.hash = sha256(prev_hash || canonical JSON of the entry's fields). Appends
happen with the subject row locked (see subjects.service.lock), so a chain never
forks; the verifier recomputes every hash and checks each link and the head.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from consent_api.audit import repository
from consent_api.audit.models import AuditCheckpoint, AuditCheckpointHead, AuditEntry
from consent_api.config import ConsentSettings
from consent_api.db import Outbox
from consent_api.subjects.models import Subject
from rescind_common import audit_api, audit_chain, bulk
from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import consent_events_pb2

GENESIS = audit_chain.GENESIS


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
    body = {
        "subject_id": subject_id,
        "seq": seq,
        "at": audit_chain.iso(at),
        "actor": actor,
        "action": action,
        "entity_id": entity_id,
        "data": data,
    }
    return audit_chain.chain_hash(prev_hash, body)


def entry_body(e: AuditEntry) -> dict[str, Any]:
    """What an entry's hash covers (this service's format, older than the shared one)."""
    return {
        "subject_id": e.subject_id,
        "seq": e.seq,
        "at": audit_chain.iso(e.at),
        "actor": e.actor,
        "action": e.action,
        "entity_id": e.entity_id,
        "data": e.data,
    }


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


SERVICE = "consent-api"
TABLES = audit_chain.CheckpointTables(
    cast(Table, AuditCheckpoint.__table__), cast(Table, AuditCheckpointHead.__table__)
)
SOURCE = repository.SubjectChains()


def verify(session: Session, signer: audit_chain.Signer, checkpoint: int | None = None) -> dict[str, Any]:
    """Every subject's chain recomputed (and, with `checkpoint`, checked against that signed
    checkpoint); problems name the subject (`subject_id`, also as `chain_id`)."""
    report = audit_api.verify(session.connection(), SOURCE, TABLES, signer, checkpoint)
    problems = [{"subject_id": p["chain_id"], **p} for p in report["problems"]]
    return {
        "ok": report["ok"],
        "subjects_checked": report["chains_checked"],
        "chains_checked": report["chains_checked"],
        "entries_checked": report["entries_checked"],
        "checkpoint": report["checkpoint"],
        "problems": problems,
    }


def checkpoint(
    conn: Connection, settings: ConsentSettings, signer: audit_chain.Signer, *, force: bool = False
) -> dict[str, Any] | None:
    """The next signed checkpoint (receipt keys), appended to the consent topic's outbox, in the
    caller's transaction; None when another replica writes or no head moved."""
    publish = audit_chain.outbox_publisher(
        service=SERVICE,
        outbox=Outbox,
        topic=settings.kafka_consent_topic,
        envelope=consent_events_pb2.ConsentEvent,
    )
    return audit_chain.write_checkpoint(
        conn,
        service=SERVICE,
        tables=TABLES,
        current_heads=SOURCE.heads,
        signer=signer,
        publish=publish,
        force=force,
    )
