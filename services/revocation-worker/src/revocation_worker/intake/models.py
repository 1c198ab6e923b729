from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rescind_common.db import JSONType, UTCDateTime, utcnow
from revocation_worker.db import Base


class Revocation(Base):
    """A revocation from the consent topic: collecting -> ready (all parts in) -> resolved (notices made)."""

    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_state_created_at", "state", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    # withdrawal | purpose_withdrawal | licensee_withdrawal | expiry | erasure
    trigger: Mapped[str] = mapped_column(String(32))
    consent_count: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="collecting")
    # When the revocation happened (the event's occurred_at): latency is measured from here.
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolve_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_resolve_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class RevocationPart(Base):
    """One ConsentRevoked event (one consent, one chunk of its sample ids)."""

    __tablename__ = "revocation_parts"

    revocation_id: Mapped[str] = mapped_column(String(40), ForeignKey("revocations.id"), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk_count: Mapped[int] = mapped_column(Integer)
    sample_ids: Mapped[list[str]] = mapped_column(JSONType)
    purposes: Mapped[list[str]] = mapped_column(JSONType)
    licensee_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set when only this licensee is withdrawn (the consent stays open to others).
    only_licensee_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RevocationRecheck(Base):
    """The registry said this licensee's license lost samples to this revocation (a
    LicenseSamplesWithdrawn on the license topic): make sure the licensee has a notice for it.

    Usually it has one already (the license was in the holders lookup) and the recheck is dropped.
    A license recorded while the registry's projection lagged behind the revocation was not: once
    the revocation is resolved, the resolver asks the registry again and tells the licensee. No
    foreign key: the license event may arrive before the revocation's own consent events."""

    __tablename__ = "revocation_rechecks"
    __table_args__ = (Index("ix_revocation_rechecks_next_check_at", "next_check_at"),)

    revocation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A failed lookup backs off (by attempts); a claim hides the row for its lease.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_check_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
