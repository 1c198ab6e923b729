from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from rescind_common.db import JSONType, UTCDateTime, utcnow
from revocation_worker.db import Base


class Notice(Base):
    """What one licensee must do about one revocation."""

    __tablename__ = "notices"
    __table_args__ = (
        UniqueConstraint("revocation_id", "licensee_id"),
        Index("ix_notices_licensee_id_id", "licensee_id", "id"),
        Index("ix_notices_status_deadline", "status", "deadline"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    revocation_id: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(40))
    licensee_id: Mapped[str] = mapped_column(String(64))
    # pending | delivered | partially_acknowledged | acknowledged | overdue | failed
    # (SQLite keeps any length: its column stays as first made, which re-making would cost the
    # foreign keys into this table.)
    status: Mapped[str] = mapped_column(String(24).with_variant(String(16), "sqlite"), default="pending")
    deadline: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    # True: the notice covers exactly its revocation's sample set (revocation_samples), stored once
    # for every licensee; False: its samples are its own notice_samples rows (and every notice made
    # before revocation_samples existed).
    covers_revocation_samples: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    overdue_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ack: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # The licensee's name as the registry answered (null: a notice made before names were kept).
    licensee_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The revocation's trigger: withdrawal | purpose_withdrawal | licensee_withdrawal | expiry | erasure
    trigger: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The licensee's final answer so far, accumulated over its acks (notices/rules.py).
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # When the `revocation.reminder` webhook was queued (once per notice).
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class NoticeSample(Base):
    __tablename__ = "notice_samples"

    notice_id: Mapped[str] = mapped_column(String(40), ForeignKey("notices.id"), primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))


class RevocationSampleSet(Base):
    """The samples a revocation's notices cover, once per revocation: a notice that covers all of
    them (covers_revocation_samples) has no rows of its own. `digest` names the set, so that a
    second resolution computing a different set never reuses it."""

    __tablename__ = "revocation_sample_sets"

    revocation_id: Mapped[str] = mapped_column(String(40), ForeignKey("revocations.id"), primary_key=True)
    sample_count: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RevocationSample(Base):
    __tablename__ = "revocation_samples"

    revocation_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("revocation_sample_sets.revocation_id"), primary_key=True
    )
    sample_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))


class NoticeModel(Base):
    __tablename__ = "notice_models"

    notice_id: Mapped[str] = mapped_column(String(40), ForeignKey("notices.id"), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    shard_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # whole | shards (null: a notice made before scopes were kept; empty shard_ids meant whole)
    scope: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # The licenses hit by the revocation that the model was trained on (null: made before they were kept).
    license_ids: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)


class NoticeLicense(Base):
    """One license a notice's revocation hit: what was withdrawn from it, and why."""

    __tablename__ = "notice_licenses"

    notice_id: Mapped[str] = mapped_column(String(40), ForeignKey("notices.id"), primary_key=True)
    license_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(40))
    purposes: Mapped[list[str]] = mapped_column(JSONType)
    # withdrawal | purpose_withdrawal | licensee_withdrawal | expiry | erasure
    trigger: Mapped[str] = mapped_column(String(32))
    sample_count: Mapped[int] = mapped_column(Integer)


class Delivery(Base):
    """One notice to one endpoint, retried until it succeeds or its window ends."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notice_id", "endpoint_id", "kind"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    notice_id: Mapped[str] = mapped_column(String(40), ForeignKey("notices.id"))
    endpoint_id: Mapped[str] = mapped_column(String(40))
    licensee_id: Mapped[str] = mapped_column(String(64))
    # notice (`revocation.notice`) | reminder (`revocation.reminder`) | overdue (`revocation.overdue`)
    kind: Mapped[str] = mapped_column(String(16), default="notice", server_default="notice")
    # pending | succeeded | dead | cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # A claimed delivery is leased; a crashed worker's leases expire and others pick them up.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(40), nullable=True)
    first_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    succeeded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
