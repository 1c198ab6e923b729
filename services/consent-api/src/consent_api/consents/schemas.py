from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from consent_api.samples.schemas import SampleId

Purpose = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
LicenseeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
ConsentStatus = Literal["active", "revoked", "expired"]

KNOWN_PURPOSES = ("model_training", "biometric_identification", "synthetic_media", "evaluation")


class CompensationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(ge=0, max_digits=14, decimal_places=4)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_ids: list[SampleId] | None = Field(default=None, description="Omit with all_samples=true")
    all_samples: bool = Field(default=False, description="Cover every sample the subject has registered")
    purposes: list[Purpose] = Field(
        min_length=1, max_length=16, description="e.g. " + ", ".join(KNOWN_PURPOSES)
    )
    licensee_id: LicenseeId | None = Field(default=None, description="null: any licensee")
    expires_at: AwareDatetime | None = None
    compensation: CompensationIn | None = None

    @field_validator("expires_at")
    @classmethod
    def _expires_at_in_utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        # Normalise here: a time near the end of the calendar in a local zone must be a 422, not a 500.
        if value is None:
            return None
        try:
            return value.astimezone(dt.UTC)
        except OverflowError as exc:
            raise ValueError("out of the supported date range") from exc


class Compensation(BaseModel):
    amount: str
    currency: str


class ConsentOut(BaseModel):
    id: str
    status: ConsentStatus
    purposes: list[str]
    revoked_purposes: list[str]
    licensee_id: str | None
    excluded_licensees: list[str] = Field(
        default_factory=list, description="Licensees withdrawn from a consent open to any licensee"
    )
    expires_at: dt.datetime | None
    compensation: Compensation | None
    sample_count: int
    active_sample_count: int
    created_at: dt.datetime
    ended_at: dt.datetime | None
    receipt_id: str
    receipt: str = Field(description="Compact JWS (EdDSA) verifiable against /.well-known/jwks.json")


class ConsentDetail(ConsentOut):
    sample_ids: list[str]
    revoked_sample_ids: list[str]
