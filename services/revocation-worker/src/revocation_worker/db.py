"""revocation-worker's declarative base, outbox table and what its relay knows of the broker's log."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rescind_common.db import NAMING_CONVENTION, DbSession, UTCDateTime, utcnow
from rescind_common.outbox import OutboxLogMixin, OutboxMixin


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Outbox(OutboxMixin, Base):
    pass


class OutboxLog(OutboxLogMixin, Base):
    pass


class ProcessedEvent(Base):
    """Event ids already applied: redelivered events are no-ops."""

    __tablename__ = "processed_events"
    # Pruning finds expired ids by age (rescind_common.consumer.EventConsumer.prune_processed).
    __table_args__ = (Index("ix_processed_events_processed_at", "processed_at"),)

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["Base", "DbSession", "Outbox", "OutboxLog", "ProcessedEvent"]
