from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from consent_api.db import Base
from rescind_common.db import UTCDateTime, utcnow


class Subject(Base):
    """A data subject, known by a pseudonymous id. The caller's `sub` is stored only as a keyed hash."""

    __tablename__ = "subjects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sub_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Profile (display name, e-mail, country) sealed under the subject's own key.
    profile_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Head of the subject's audit chain; appends lock this row.
    audit_seq: Mapped[int] = mapped_column(Integer, default=0)
    audit_head: Mapped[str] = mapped_column(String(64), default="0" * 64)


class SubjectKey(Base):
    """The subject's data key, wrapped under the master key. Deleting it crypto-shreds the subject."""

    __tablename__ = "subject_keys"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    # The master key that wrapped it (RESCIND_CONSENT_MASTER_KEYS); `v1` from before key ids.
    key_id: Mapped[str] = mapped_column(String(32), default="v1", server_default="v1")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class KeyCheck(Base):
    """A keyed check value of a secret the data depends on (the subject pepper): a process holding
    another pepper would silently make every seller a new subject, so it is refused instead."""

    __tablename__ = "key_checks"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
