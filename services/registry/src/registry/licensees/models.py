from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base
from rescind_common.db import UTCDateTime, utcnow


class Licensee(Base):
    """A buyer. Its callers' tokens carry `role=licensee` and `sub` = this id."""

    __tablename__ = "licensees"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
