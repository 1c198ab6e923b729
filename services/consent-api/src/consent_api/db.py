"""consent-api's declarative base, outbox table and what its relay knows of the broker's log."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from rescind_common.db import NAMING_CONVENTION, DbSession
from rescind_common.outbox import OutboxLogMixin, OutboxMixin


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Outbox(OutboxMixin, Base):
    pass


class OutboxLog(OutboxLogMixin, Base):
    pass


__all__ = ["Base", "DbSession", "Outbox", "OutboxLog"]
