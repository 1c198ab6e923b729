from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RightsType = Literal["access", "erasure"]


class RightsRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: RightsType


class RightsRequestOut(BaseModel):
    id: str
    type: RightsType
    status: Literal["completed", "in_progress", "completed_with_exceptions"] = Field(
        description="Erasure: in_progress until every holder answered in full or is overdue; then "
        "completed, or completed_with_exceptions when some holder did not answer in full in time"
    )
    created_at: dt.datetime
    completed_at: dt.datetime | None
    revocation_id: str | None = None
    export_url: str | None = None
    export: dict[str, Any] | None = None
