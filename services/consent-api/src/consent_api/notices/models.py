from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from consent_api.db import Base
from rescind_common.db import JSONType, UTCDateTime, utcnow


class RevocationNotice(Base):
    """Projection of the notice topic: which licensee was told about a revocation, and how far it got."""

    __tablename__ = "revocation_notices"

    revocation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    notice_id: Mapped[str] = mapped_column(String(40))
    # pending | delivered | partially_acknowledged | acknowledged | overdue | failed
    status: Mapped[str] = mapped_column(String(24))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # What the worker reported (NoticeCreated ... NoticeOverdue); NULL on rows from before 0010 and
    # until the step's event arrives. Names are organisations' (the registry's), never people's.
    licensee_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    webhook_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    told_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Per license hit: license_id, consent_id, purposes, trigger, sample_count.
    licenses: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    # The models to act on: model_id, name, version, whole, shard_ids, license_ids.
    models: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    # The first successful delivery.
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    first_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivery_status_code: Mapped[int | None] = mapped_column(nullable=True)
    # The latest answer (acknowledged or partially): deleted | not_held | exempt, with its basis.
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    basis: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # model_id, action, basis per model answered.
    model_answers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    complete: Mapped[bool | None] = mapped_column(nullable=True)
    evidence_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    ack_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    signature_verified: Mapped[bool | None] = mapped_column(nullable=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    overdue_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Where each step sits in the subject's audit chain: step, chain_id, seq, hash, at.
    steps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)


class RevocationResolution(Base):
    """The worker found the holders of a revocation's samples (possibly none). The first resolution
    stays; a licensee told later (a license recorded while the registry lagged) only adds a notice."""

    __tablename__ = "revocation_resolutions"

    revocation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    notice_count: Mapped[int] = mapped_column(default=0)
    # Who the resolution told (RevocationResolved.licensee_ids); None for rows from before 0006.
    licensee_ids: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    resolved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProcessedEvent(Base):
    __tablename__ = "processed_events"
    # Pruning finds expired ids by age (rescind_common.consumer.EventConsumer.prune_processed).
    __table_args__ = (Index("ix_processed_events_processed_at", "processed_at"),)

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
