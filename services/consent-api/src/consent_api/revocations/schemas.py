from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from consent_api.consents.schemas import LicenseeId, Purpose
from consent_api.samples.schemas import SampleId

Scope = Literal["all", "licensee", "purpose", "samples"]
RevocationStatus = Literal["pending", "delivered", "acknowledged", "overdue", "failed", "completed"]
NoticeStatus = Literal["pending", "delivered", "acknowledged", "overdue", "failed"]


class ConsentRevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_ids: list[SampleId] | None = Field(
        default=None,
        min_length=1,
        description="Withdraw only these samples; omit to revoke the whole consent",
    )
    reason: str | None = Field(
        default=None, max_length=2000, description="Stored encrypted; never sent to buyers"
    )


class RevocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Scope
    licensee_id: LicenseeId | None = None
    purpose: Purpose | None = None
    sample_ids: list[SampleId] | None = Field(default=None, min_length=1)
    reason: str | None = Field(default=None, max_length=2000)


class NoticeOut(BaseModel):
    licensee_id: str
    status: NoticeStatus
    updated_at: dt.datetime | None = None


class RevocationOut(BaseModel):
    id: str
    status: RevocationStatus
    scope: str
    trigger: str
    consent_id: str | None
    licensee_id: str | None
    purpose: str | None
    consent_ids: list[str]
    sample_count: int
    created_at: dt.datetime
    notices: list[NoticeOut] = Field(
        default_factory=list, description="One per licensee told; filled as the revocation-worker reports"
    )
