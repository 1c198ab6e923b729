from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consent_api.db import Base
from rescind_common.audit_chain import CheckpointHeadMixin, CheckpointMixin
from rescind_common.db import JSONType, UTCDateTime, utcnow


class AuditEntry(Base):
    """Tamper-evident log: each entry carries the hash of the subject's previous entry."""

    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("subject_id", "seq"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    subject_id: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(40))
    # Pseudonymous facts only (ids, purposes, counts): the log outlives erasure.
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(CheckpointMixin, Base):
    """A signed Merkle root over every subject chain's head (rescind_common.audit_chain)."""


class AuditCheckpointHead(CheckpointHeadMixin, Base):
    pass
