from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rescind_common.db import UTCDateTime, utcnow
from revocation_worker.db import Base


class LicenseePolicy(Base):
    """An operator's per-licensee override of the notice deadline (at most one of the two)."""

    __tablename__ = "licensee_policies"

    licensee_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deadline_days: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline_months: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
