"""Notices and their samples and models as plain rows (no ORM objects), for the hot paths."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple, Protocol


class SampleRow(NamedTuple):
    sample_id: str
    sha256: str
    kind: str


class NoticeLike(Protocol):
    """What building a webhook body reads of a notice: a `Notice` or a plain `NoticeRow`."""

    @property
    def id(self) -> str: ...
    @property
    def revocation_id(self) -> str: ...
    @property
    def licensee_id(self) -> str: ...
    @property
    def deadline(self) -> dt.datetime: ...
    @property
    def revoked_at(self) -> dt.datetime: ...
    @property
    def sample_count(self) -> int: ...
    @property
    def covers_revocation_samples(self) -> bool: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def licensee_name(self) -> str | None: ...
    @property
    def trigger(self) -> str | None: ...


class NoticeRow(NamedTuple):
    """A notice as the delivery loop reads it (no ORM object)."""

    id: str
    revocation_id: str
    licensee_id: str
    deadline: dt.datetime
    revoked_at: dt.datetime
    sample_count: int
    covers_revocation_samples: bool
    created_at: dt.datetime
    licensee_name: str | None
    trigger: str | None


class ModelRow(NamedTuple):
    model_id: str
    name: str
    version: str
    shard_ids: list[str]
    scope: str | None
    license_ids: list[str] | None


class LicenseRow(NamedTuple):
    license_id: str
    consent_id: str
    purposes: list[str]
    trigger: str
    sample_count: int
