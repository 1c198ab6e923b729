"""Model lineage: which licenses (and which training shards) each declared model was trained on."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base
from rescind_common.db import UTCDateTime, utcnow


class TrainedModel(Base):
    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("licensee_id", "name", "version"),
        Index("ix_models_licensee_id_id", "licensee_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(String(40), ForeignKey("licensees.id"))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelLicense(Base):
    __tablename__ = "model_licenses"
    __table_args__ = (Index("ix_model_licenses_license_id_model_id", "license_id", "model_id"),)

    model_id: Mapped[str] = mapped_column(String(40), ForeignKey("models.id"), primary_key=True)
    license_id: Mapped[str] = mapped_column(String(40), ForeignKey("licenses.id"), primary_key=True)
    # '' when the license went into the whole model rather than one shard (SISA-style training).
    shard_id: Mapped[str] = mapped_column(String(100), primary_key=True, default="")
