"""The registry's audit chains (one per licensee: the licensee, its licenses, its models) and
their signed checkpoints (rescind_common.audit_chain)."""

from __future__ import annotations

from registry.db import Base
from rescind_common.audit_chain import ChainEntryMixin, ChainHeadMixin, CheckpointHeadMixin, CheckpointMixin


class AuditEntry(ChainEntryMixin, Base):
    pass


class AuditHead(ChainHeadMixin, Base):
    pass


class AuditCheckpoint(CheckpointMixin, Base):
    pass


class AuditCheckpointHead(CheckpointHeadMixin, Base):
    pass
