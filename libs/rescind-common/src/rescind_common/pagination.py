"""Opaque cursors for keyset pagination over time-ordered ids."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from rescind_common.problems import Problem, field_error

T = TypeVar("T")
R = TypeVar("R")

MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def page_of(
    rows: Sequence[R],
    limit: int,
    items: Callable[[Sequence[R]], list[T]],
    key: Callable[[R], str] = lambda row: str(getattr(row, "id")),  # noqa: B009
) -> Page[T]:
    """A page from `limit + 1` rows read past the cursor: the first `limit` as `items(...)` builds
    them, and a cursor after the last of them when the extra row shows there are more."""
    more = len(rows) > limit
    return Page(items=items(rows[:limit]), next_cursor=encode_cursor(key(rows[limit - 1])) if more else None)


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Problem(
            400, "The cursor is not valid.", errors=[field_error("query.cursor", "invalid")]
        ) from exc
    if not raw or len(raw) > 64 or "_" not in raw or not raw.isprintable():
        raise Problem(400, "The cursor is not valid.", errors=[field_error("query.cursor", "invalid")])
    return raw


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="Opaque cursor from `next_cursor`")]
