"""The consent projection: what the registry knows about samples and consents, built only from the
consent topic. It can be dropped and rebuilt by re-reading the topic; nothing else references it by
foreign key."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base
from rescind_common.db import JSONType, UTCDateTime, utcnow


class ProjectedSample(Base):
    __tablename__ = "projected_samples"
    __table_args__ = (Index("ix_projected_samples_subject_id", "subject_id"),)

    sample_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    registered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProjectedConsent(Base):
    __tablename__ = "projected_consents"
    __table_args__ = (Index("ix_projected_consents_subject_id", "subject_id"),)

    consent_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    # None: any licensee.
    licensee_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    purposes: Mapped[list[str]] = mapped_column(JSONType)
    # Purposes withdrawn one by one while the consent stays active for the others.
    revoked_purposes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Licensees withdrawn from a consent open to any licensee (ConsentRevoked.only_licensee_id).
    excluded_licensees: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # active | revoked | expired
    status: Mapped[str] = mapped_column(String(16), default="active")
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # None when a revocation arrived before the grant (the grant then fills the facts in).
    granted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(40), nullable=True)  # revocation id
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProjectedConsentSample(Base):
    __tablename__ = "projected_consent_samples"
    __table_args__ = (Index("ix_projected_consent_samples_sample_id", "sample_id"),)

    consent_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("projected_consents.consent_id"), primary_key=True
    )
    sample_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revocation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class ProcessedEvent(Base):
    """Every consent-topic event applied, written in the same transaction as its effect, so that a
    redelivered event (consumer restart, relay replay) is recognised and skipped."""

    __tablename__ = "processed_events"
    # Pruning finds expired ids by age (rescind_common.consumer.EventConsumer.prune_processed).
    __table_args__ = (Index("ix_processed_events_processed_at", "processed_at"),)

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SubjectErasure(Base):
    """A subject's erasure (its consents were revoked by `revocation_id`, reported separately)."""

    __tablename__ = "subject_erasures"

    revocation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
