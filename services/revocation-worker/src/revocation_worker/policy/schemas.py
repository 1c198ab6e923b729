from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class PolicyIn(BaseModel):
    """At most one of the two; neither: the licensee follows the service's default again."""

    model_config = ConfigDict(extra="forbid")

    deadline_days: int | None = Field(default=None, ge=1, le=3650)
    deadline_months: int | None = Field(default=None, ge=1, le=120)


class PolicyOut(BaseModel):
    licensee_id: str
    deadline_days: float | None
    deadline_months: int | None
    # True: no override, the service's default applies (shown in `effective_*`).
    default: bool
    effective_deadline_days: float | None
    effective_deadline_months: int | None
    updated_at: dt.datetime | None
