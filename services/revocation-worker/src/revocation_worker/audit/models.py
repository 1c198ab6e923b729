"""revocation-worker's audit chains (one per licensee: endpoints, notices, acks, re-drives) and
their signed checkpoints (rescind_common.audit_chain)."""

from __future__ import annotations

from rescind_common.audit_chain import ChainEntryMixin, ChainHeadMixin, CheckpointHeadMixin, CheckpointMixin
from revocation_worker.db import Base


class AuditEntry(ChainEntryMixin, Base):
    pass


class AuditHead(ChainHeadMixin, Base):
    pass


class AuditCheckpoint(CheckpointMixin, Base):
    pass


class AuditCheckpointHead(CheckpointHeadMixin, Base):
    pass
