from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from rescind_common.db import UTCDateTime, utcnow
from revocation_worker.db import Base


class Endpoint(Base):
    """A licensee's webhook endpoint. Secrets are stored encrypted (they must be usable to sign)."""

    __tablename__ = "endpoints"
    __table_args__ = (Index("ix_endpoints_licensee_id_id", "licensee_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # active | disabled
    status: Mapped[str] = mapped_column(String(16), default="active")
    disabled_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    # The keys that sealed them (RESCIND_WORKER_SECRET_KEYS); `v1` from before key ids.
    secret_key_id: Mapped[str] = mapped_column(String(32), default="v1", server_default="v1")
    previous_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    previous_secret_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # First failure since the last success; drives automatic disabling.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
