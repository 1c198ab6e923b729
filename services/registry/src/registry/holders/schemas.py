from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from registry.licenses.schemas import Dataset, LicenseStatus
from registry.schemas import SampleId


class HoldersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_ids: list[SampleId] = Field(min_length=1, description="Up to RESCIND_REGISTRY_MAX_HOLDER_SAMPLES")


class HeldSample(BaseModel):
    sample_id: str
    sha256: str | None
    kind: str | None
    license_ids: list[str]


class HeldLicense(BaseModel):
    license_id: str
    status: LicenseStatus
    consent_id: str
    purpose: str
    dataset: Dataset | None


class HoldingModel(BaseModel):
    model_id: str
    name: str
    version: str
    shard_ids: list[str] = Field(description="Shards trained on these samples; empty: the whole model")
    sample_ids: list[str]
    license_ids: list[str]


class Holder(BaseModel):
    licensee_id: str
    licensee_name: str
    samples: list[HeldSample]
    licenses: list[HeldLicense]
    models: list[HoldingModel]


class HoldersOut(BaseModel):
    holders: list[Holder]
    unknown_sample_ids: list[str] = Field(
        description="Requested ids the registry has never heard of (no sample, no license)"
    )
