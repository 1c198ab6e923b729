from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Evidence is stored with the notice and returned with it in every list: keep one ack small.
MAX_EVIDENCE_BYTES = 64 * 1024

NoticeStatus = Literal["pending", "delivered", "acknowledged", "overdue", "failed"]


class SampleRef(BaseModel):
    sample_id: str
    sha256: str
    kind: str


Trigger = Literal["withdrawal", "purpose_withdrawal", "licensee_withdrawal", "expiry", "erasure"]


class ModelRef(BaseModel):
    model_id: str
    name: str
    version: str
    scope: Literal["whole", "shards"] = Field(
        default="whole", description="whole: act on the whole model; shards: only on shard_ids"
    )
    shard_ids: list[str] = Field(default=[], description="The shards to act on; empty when scope is whole")
    license_ids: list[str] = Field(
        default=[], description="The licenses hit by the revocation that the model was trained on"
    )


class LicenseRef(BaseModel):
    """One license the revocation hit."""

    license_id: str
    consent_id: str
    purposes: list[str] = Field(description="The purposes withdrawn from the consent the license relies on")
    trigger: Trigger
    sample_count: int = Field(description="How many of the license's samples the revocation withdrew")


class DeliveryOut(BaseModel):
    endpoint_id: str
    status: Literal["pending", "succeeded", "dead", "cancelled"]
    attempts: int
    next_attempt_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None


class NoticeOut(BaseModel):
    id: str
    revocation_id: str
    licensee_id: str
    licensee_name: str | None = Field(
        default=None,
        description="As the registry names the licensee (null on notices made before names were kept)",
    )
    trigger: Trigger = Field(default="withdrawal", description="Why the samples were withdrawn")
    status: NoticeStatus
    deadline: dt.datetime
    revoked_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    sample_count: int
    samples: list[SampleRef] = Field(description="The first samples inline; page the rest via samples_url")
    samples_url: str
    licenses: list[LicenseRef] = Field(
        default=[], description="Per license hit: its consent, the purposes withdrawn, why, how many samples"
    )
    models: list[ModelRef]
    ack: dict[str, Any] | None = None
    deliveries: list[DeliveryOut] = []


class ModelAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(max_length=40)
    action: Literal["retrained", "unlearned", "withdrawn"]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["completed"]
    samples_deleted: bool = True
    models: list[ModelAction] = Field(default_factory=list, max_length=10_000)
    evidence: dict[str, Any] | None = Field(
        default=None,
        description="Optional proof: deletion job ids, retraining run ids, attestations (at most 64 KiB)",
    )

    @field_validator("evidence")
    @classmethod
    def _small_evidence(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value, separators=(",", ":"))) > MAX_EVIDENCE_BYTES:
            raise ValueError(f"evidence is larger than {MAX_EVIDENCE_BYTES} bytes as JSON")
        return value


class RedriveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    licensee_id: str | None = Field(default=None, max_length=64)
    endpoint_id: str | None = Field(default=None, max_length=40)


class RedriveOut(BaseModel):
    redriven: int
