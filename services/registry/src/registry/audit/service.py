"""The registry's signed audit checkpoints: every licensee chain's head, folded into a Merkle root,
signed with RESCIND_REGISTRY_AUDIT_SIGNING_KEY_FILE and appended to the license topic's outbox."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table

from registry.audit.models import AuditCheckpoint, AuditCheckpointHead, AuditEntry, AuditHead
from registry.config import RegistrySettings
from registry.db import Outbox
from rescind_common import audit_chain
from rescind_common.audit_api import GenericSource
from rescind_common.proto.rescind.v1 import license_events_pb2 as pb

SERVICE = "registry"
TABLES = audit_chain.CheckpointTables(
    cast(Table, AuditCheckpoint.__table__), cast(Table, AuditCheckpointHead.__table__)
)
SOURCE = GenericSource(cast(Table, AuditEntry.__table__), cast(Table, AuditHead.__table__))


def signer(settings: RegistrySettings) -> audit_chain.Ed25519Signer:
    return audit_chain.load_signer(
        settings.registry_audit_signing_key_file, settings.state_dir / "keys" / "registry-audit-ed25519.pem"
    )


def checkpoint(
    conn: Connection, settings: RegistrySettings, key: audit_chain.Signer, *, force: bool = False
) -> dict[str, Any] | None:
    """Write the next checkpoint in the caller's transaction (None: another replica is writing, or
    no head moved)."""
    publish = audit_chain.outbox_publisher(
        service=SERVICE, outbox=Outbox, topic=settings.kafka_license_topic, envelope=pb.LicenseEvent
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
