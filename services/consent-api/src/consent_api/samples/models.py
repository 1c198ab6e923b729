from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consent_api.db import Base
from rescind_common.db import UTCDateTime, utcnow


class Sample(Base):
    """A sample's fingerprint and metadata; never the media itself."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("subject_id", "sha256"),
        Index("ix_samples_subject_id_id", "subject_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Attributes may describe the person (age band, accent...): sealed under the subject key.
    attributes_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SampleHash(Base):
    """Which subject registered a content hash first: the same content is never registered by a
    second subject (docs/adr/0006-one-subject-per-content-hash.md). Kept after that subject's erasure,
    as a suppression record, so that erased content cannot be registered and licensed again."""

    __tablename__ = "sample_hashes"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    sample_id: Mapped[str] = mapped_column(String(40))
    registered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
