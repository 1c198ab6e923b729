from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from revocation_worker.notices.rules import ExemptBasis, ModelActionName, NotHeldReason, Outcome

# Evidence is stored with the notice and returned with it in every list: keep one ack small.
MAX_EVIDENCE_BYTES = 64 * 1024

NoticeStatus = Literal["pending", "delivered", "partially_acknowledged", "acknowledged", "overdue", "failed"]


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
    # notice | reminder | overdue: which webhook (`revocation.notice`, `.reminder`, `.overdue`)
    kind: str = "notice"
    status: Literal["pending", "succeeded", "dead", "cancelled"]
    attempts: int
    next_attempt_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None


class ModelAnswerOut(BaseModel):
    model_id: str
    action: ModelActionName
    basis: str | None = None


class AnswerOut(BaseModel):
    outcome: Outcome | None
    reason: str | None = None
    basis: str | None = None
    models: list[ModelAnswerOut]
    # Models the notice named that no ack answered yet; `samples_answered`: the outcome is final.
    missing_models: list[str] = []
    samples_answered: bool
    complete: bool
    evidence: dict[str, Any] | None
    evidence_digest: str | None
    ack_digest: str
    answered_at: dt.datetime
    signature_verified: bool


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
    ack: dict[str, Any] | None = Field(default=None, description="The latest ack as received")
    answer: AnswerOut | None = Field(default=None, description="The final answer so far, every ack merged")
    reminded_at: dt.datetime | None = None
    overdue_at: dt.datetime | None = None
    deliveries: list[DeliveryOut] = []


class ModelAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(max_length=40)
    action: ModelActionName
    basis: ExemptBasis | None = Field(default=None, description="Required with action exempt")


class Evidence(BaseModel):
    """Structured, all optional; other keys are kept as given."""

    model_config = ConfigDict(extra="allow")

    job_ids: list[str] | None = Field(default=None, max_length=1000, description="Deletion job ids")
    run_ids: list[str] | None = Field(default=None, max_length=1000, description="Retraining/unlearning runs")
    attestation: str | None = Field(default=None, max_length=10_000, description="Attestation text")


class AckIn(BaseModel):
    """v2: `outcome` (+ `reason` / `basis`) and an action per named model. The v1 body
    (`status: completed`, `samples_deleted`) still works: true (or absent with `status`) is
    `deleted`; false without an outcome leaves the samples unanswered."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["completed"] | None = None
    samples_deleted: bool | None = None
    outcome: Outcome | None = None
    reason: NotHeldReason | None = Field(default=None, description="Required with outcome not_held")
    basis: ExemptBasis | None = Field(default=None, description="Required with outcome exempt")
    models: list[ModelAction] = Field(default_factory=list, max_length=10_000)
    evidence: Evidence | None = Field(
        default=None,
        description="Optional proof: job_ids, run_ids, attestation, anything else (at most 64 KiB as JSON)",
    )
    signature: str | None = Field(
        default=None,
        max_length=8192,
        description="Detached compact JWS (RFC 7515 appendix F) over the canonical JSON of this body "
        "without `signature`, by a key registered at /v1/ack-keys",
    )

    @field_validator("evidence")
    @classmethod
    def _small_evidence(cls, value: Evidence | None) -> Evidence | None:
        if value is not None and len(value.model_dump_json(exclude_unset=True)) > MAX_EVIDENCE_BYTES:
            raise ValueError(f"evidence is larger than {MAX_EVIDENCE_BYTES} bytes as JSON")
        return value


class RedriveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    licensee_id: str | None = Field(default=None, max_length=64)
    endpoint_id: str | None = Field(default=None, max_length=40)


class RedriveOut(BaseModel):
    redriven: int
