from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base
from rescind_common.db import UTCDateTime, utcnow


class License(Base):
    """Licensee X received samples under consent C for purpose P (optionally as a dataset snapshot).

    `consent_id` is not a foreign key: the consent projection can be rebuilt from the bus."""

    __tablename__ = "licenses"
    __table_args__ = (
        # One license per (licensee, consent, purpose, dataset): repeating the request is idempotent.
        # The dataset is '' when none is named (NULLs would never collide).
        UniqueConstraint("licensee_id", "consent_id", "purpose", "dataset_name", "dataset_version"),
        Index("ix_licenses_licensee_id_id", "licensee_id", "id"),
        Index("ix_licenses_consent_id", "consent_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(String(40), ForeignKey("licensees.id"))
    consent_id: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(64))
    dataset_name: Mapped[str] = mapped_column(String(200), default="")
    dataset_version: Mapped[str] = mapped_column(String(100), default="")
    # active | revoked (every sample withdrawn)
    status: Mapped[str] = mapped_column(String(16), default="active")
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    revoked_sample_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class LicenseSample(Base):
    """One row per (license, sample): the table that grows to tens of millions of rows.

    The primary key serves per-license work (revocation, listing a license's samples); the
    (sample_id, license_id) index serves the holders lookup as an index-only scan."""

    __tablename__ = "license_samples"
    __table_args__ = (Index("ix_license_samples_sample_id_license_id", "sample_id", "license_id"),)

    license_id: Mapped[str] = mapped_column(String(40), ForeignKey("licenses.id"), primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Withdrawn samples stay, with when and by which revocation: the buyer still holds them until
    # it confirms deletion.
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revocation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
