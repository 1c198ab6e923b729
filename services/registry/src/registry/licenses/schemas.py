from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.schemas import ConsentId, LicenseeId, Name, Purpose, SampleId, Version

LicenseStatus = Literal["active", "revoked"]


class Dataset(BaseModel):
    """A named, versioned dataset snapshot."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    version: Version


class LicenseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    licensee_id: LicenseeId
    consent_id: ConsentId
    purpose: Purpose
    sample_ids: list[SampleId] = Field(min_length=1, description="Up to RESCIND_REGISTRY_MAX_LICENSE_SAMPLES")
    dataset: Dataset | None = None


class LicenseOut(BaseModel):
    id: str
    licensee_id: str
    consent_id: str
    purpose: str
    dataset: Dataset | None
    status: LicenseStatus
    sample_count: int
    revoked_sample_count: int
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class LicenseSampleOut(BaseModel):
    sample_id: str
    sha256: str | None
    kind: str | None
    revoked_at: dt.datetime | None
    revocation_id: str | None
