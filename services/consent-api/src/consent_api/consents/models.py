from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from consent_api.db import Base
from rescind_common.db import JSONType, UTCDateTime, utcnow


class Consent(Base):
    __tablename__ = "consents"
    __table_args__ = (
        Index("ix_consents_subject_id_id", "subject_id", "id"),
        Index("ix_consents_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    # active | revoked | expired
    status: Mapped[str] = mapped_column(String(16), default="active")
    purposes: Mapped[list[str]] = mapped_column(JSONType)
    # Purposes withdrawn one by one (scope=purpose) while the consent stays active for the rest.
    revoked_purposes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    licensee_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Licensees withdrawn one by one from a consent open to any licensee (scope=licensee).
    excluded_licensees: Mapped[list[str]] = mapped_column(JSONType, default=list)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    compensation: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    active_sample_count: Mapped[int] = mapped_column(Integer, default=0)
    receipt_id: Mapped[str] = mapped_column(String(40), unique=True)
    receipt: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ConsentSample(Base):
    __tablename__ = "consent_samples"
    __table_args__ = (Index("ix_consent_samples_sample_id", "sample_id"),)

    consent_id: Mapped[str] = mapped_column(String(40), ForeignKey("consents.id"), primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(40), ForeignKey("samples.id"), primary_key=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revocation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
