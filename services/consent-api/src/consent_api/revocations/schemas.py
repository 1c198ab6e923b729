from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from consent_api.consents.schemas import LicenseeId, Purpose
from consent_api.samples.schemas import SampleId

Scope = Literal["all", "licensee", "purpose", "samples"]
RevocationStatus = Literal[
    "pending", "delivered", "partially_acknowledged", "acknowledged", "overdue", "failed", "completed"
]
NoticeStatus = Literal["pending", "delivered", "partially_acknowledged", "acknowledged", "overdue", "failed"]


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


class NoticeModelOut(BaseModel):
    model_id: str
    name: str | None = None
    version: str | None = None
    scope: Literal["whole", "shards"] = Field(description="Act on the whole model, or on `shard_ids` only")
    shard_ids: list[str] = Field(default_factory=list)
    action: str | None = Field(
        default=None, description="The holder's answer: retrained | unlearned | withdrawn | exempt"
    )
    basis: str | None = Field(default=None, description="exempt: the legal basis code")


class NoticeOut(BaseModel):
    licensee_id: str
    status: NoticeStatus
    updated_at: dt.datetime | None = None
    notice_id: str | None = None
    licensee_name: str | None = Field(default=None, description="The holder, as the registry names it")
    told_at: dt.datetime | None = Field(default=None, description="When the notice was made")
    delivered_at: dt.datetime | None = Field(default=None, description="The first successful delivery")
    delivery_status_code: int | None = Field(default=None, description="The HTTP status it answered")
    webhook_id: str | None = Field(default=None, description="The `webhook-id` of every delivery")
    final_status: str | None = Field(
        default=None, description="The holder's answer for the samples: deleted | not_held | exempt"
    )
    basis: str | None = Field(default=None, description="not_held: the reason; exempt: the legal basis")
    models: list[NoticeModelOut] = Field(default_factory=list)
    evidence_digest: str | None = None
    ack_digest: str | None = None
    answered_at: dt.datetime | None = None
    deadline: dt.datetime | None = None
    overdue: bool = False


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
