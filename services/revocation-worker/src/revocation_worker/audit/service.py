"""revocation-worker's signed audit checkpoints: every licensee chain's head, folded into a Merkle
root, signed with RESCIND_WORKER_AUDIT_SIGNING_KEY_FILE and appended to the notice topic's outbox."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table

from rescind_common import audit_chain
from rescind_common.audit_api import GenericSource
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.audit.models import AuditCheckpoint, AuditCheckpointHead, AuditEntry, AuditHead
from revocation_worker.config import WorkerSettings
from revocation_worker.db import Outbox

SERVICE = "revocation-worker"
TABLES = audit_chain.CheckpointTables(
    cast(Table, AuditCheckpoint.__table__), cast(Table, AuditCheckpointHead.__table__)
)
SOURCE = GenericSource(cast(Table, AuditEntry.__table__), cast(Table, AuditHead.__table__))


def signer(settings: WorkerSettings) -> audit_chain.Ed25519Signer:
    return audit_chain.load_signer(
        settings.worker_audit_signing_key_file, settings.state_dir / "keys" / "worker-audit-ed25519.pem"
    )


def checkpoint(
    conn: Connection, settings: WorkerSettings, key: audit_chain.Signer, *, force: bool = False
) -> dict[str, Any] | None:
    """Write the next checkpoint in the caller's transaction (None: another replica is writing, or
    no head moved)."""
    publish = audit_chain.outbox_publisher(
        service=SERVICE, outbox=Outbox, topic=settings.kafka_notice_topic, envelope=pb.NoticeEvent
    )
    return audit_chain.write_checkpoint(
        conn,
        service=SERVICE,
        tables=TABLES,
        current_heads=SOURCE.heads,
        signer=key,
        publish=publish,
        force=force,
    )
