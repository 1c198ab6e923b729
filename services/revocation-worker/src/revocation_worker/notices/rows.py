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


class ModelRow(NamedTuple):
    model_id: str
    name: str
    version: str
    shard_ids: list[str]
