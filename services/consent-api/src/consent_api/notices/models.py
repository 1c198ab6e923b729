from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from consent_api.db import Base
from rescind_common.db import JSONType, UTCDateTime, utcnow


class RevocationNotice(Base):
    """Projection of the notice topic: which licensee was told about a revocation, and how far it got."""

    __tablename__ = "revocation_notices"

    revocation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    notice_id: Mapped[str] = mapped_column(String(40))
    # pending | delivered | acknowledged | overdue | failed
    status: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RevocationResolution(Base):
    """The worker found the holders of a revocation's samples (possibly none). The first resolution
    stays; a licensee told later (a license recorded while the registry lagged) only adds a notice."""

    __tablename__ = "revocation_resolutions"

    revocation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    notice_count: Mapped[int] = mapped_column(default=0)
    # Who the resolution told (RevocationResolved.licensee_ids); None for rows from before 0006.
    licensee_ids: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    resolved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProcessedEvent(Base):
    __tablename__ = "processed_events"
    # Pruning finds expired ids by age (rescind_common.consumer.EventConsumer.prune_processed).
    __table_args__ = (Index("ix_processed_events_processed_at", "processed_at"),)

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
