"""revocation-worker's declarative base and outbox table."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rescind_common.db import NAMING_CONVENTION, DbSession, UTCDateTime, utcnow
from rescind_common.outbox import OutboxMixin


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Outbox(OutboxMixin, Base):
    pass


class ProcessedEvent(Base):
    """Event ids already applied: redelivered events are no-ops."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["Base", "DbSession", "Outbox", "ProcessedEvent"]
