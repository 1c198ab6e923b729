from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from rescind_common.db import JSONType, UTCDateTime, utcnow
from revocation_worker.db import Base


class AckKey(Base):
    """A licensee's public key (JWK) that verifies the detached signatures on its acks."""

    __tablename__ = "ack_keys"
    __table_args__ = (
        UniqueConstraint("licensee_id", "kid"),
        Index("ix_ack_keys_licensee_id_id", "licensee_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(128))
    # EdDSA (Ed25519) | ES256 (P-256)
    alg: Mapped[str] = mapped_column(String(16))
    jwk: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
