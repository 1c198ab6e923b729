"""consent-api's declarative base and outbox table."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from rescind_common.db import NAMING_CONVENTION, DbSession
from rescind_common.outbox import OutboxMixin


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Outbox(OutboxMixin, Base):
    pass


__all__ = ["Base", "DbSession", "Outbox"]
