from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from consent_api.db import Base
from rescind_common.db import JSONType, UTCDateTime, utcnow


class Revocation(Base):
    """One withdrawal, by the subject, by expiry or by erasure. Pseudonymous: it survives erasure."""

    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_subject_id_id", "subject_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    # consent | all | licensee | purpose | samples
    scope: Mapped[str] = mapped_column(String(16))
    # subject | expiry | erasure
    trigger: Mapped[str] = mapped_column(String(16), default="subject")
    consent_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    licensee_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The free-text reason may name people: sealed under the subject key.
    reason_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # pending | delivered | acknowledged | overdue | failed | completed (nothing to tell)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    consent_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RevocationItem(Base):
    """Which samples this revocation withdrew from which consent, for which purposes."""

    __tablename__ = "revocation_items"

    revocation_id: Mapped[str] = mapped_column(String(40), ForeignKey("revocations.id"), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(40), primary_key=True)
