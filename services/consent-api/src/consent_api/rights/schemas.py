from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

RightsType = Literal["access", "erasure"]


class RightsRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: RightsType


class RightsRequestOut(BaseModel):
    id: str
    type: RightsType
    status: Literal["completed"]
    created_at: dt.datetime
    completed_at: dt.datetime | None
    revocation_id: str | None = None
    export_url: str | None = None
    export: dict[str, Any] | None = None
