from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.licenses.schemas import Dataset, LicenseStatus
from registry.schemas import SampleId


class HoldersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_ids: list[SampleId] = Field(min_length=1, description="Up to RESCIND_REGISTRY_MAX_HOLDER_SAMPLES")
    view: Literal["samples", "licenses"] = Field(
        default="samples",
        description="samples: per licensee, every held (sample, license ids) pair (HoldersOut). "
        "licenses: per license, how many of the requested samples it holds, listing them only when "
        "it holds a strict subset (HoldersByLicenseOut): compact for a large fan-out.",
    )


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


class ModelLink(BaseModel):
    license_id: str
    shard_id: str | None = Field(description="The shard this license went into; null: the whole model")


class HoldingModel(BaseModel):
    model_id: str
    name: str
    version: str
    shard_ids: list[str] = Field(
        description="Shards trained on these samples; empty: the whole model (`whole`)"
    )
    sample_ids: list[str]
    license_ids: list[str]
    whole: bool = Field(description="Some of these samples' licenses went into the whole model")
    links: list[ModelLink] = Field(
        description="Each (license, shard or whole model) link of the model to these samples' licenses: "
        "what a caller narrowing to some of the licenses computes the exact scope from"
    )


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


class LicenseHolding(BaseModel):
    license_id: str
    licensee_id: str
    licensee_name: str
    status: LicenseStatus
    consent_id: str
    purpose: str
    dataset: Dataset | None
    sample_count: int = Field(description="How many of the requested samples this license holds")
    all_requested: bool = Field(description="It holds every requested sample (sample_ids is then empty)")
    sample_ids: list[str] = Field(description="The requested samples it holds; empty when all_requested")


class SampleRef(BaseModel):
    sample_id: str
    sha256: str | None = Field(
        description="null when the sample is licensed but its registration never arrived"
    )
    kind: str | None


class LicensedModel(BaseModel):
    model_id: str
    licensee_id: str
    name: str
    version: str
    shard_ids: list[str] = Field(
        description="Shards trained on these licenses; empty: the whole model (`whole`)"
    )
    license_ids: list[str] = Field(description="Which of the answer's licenses it was trained on")
    whole: bool = Field(description="Some of the answer's licenses went into the whole model")
    links: list[ModelLink] = Field(
        description="Each (license, shard or whole model) link of the model to the answer's licenses: "
        "a caller acting on some of the licenses only computes the exact scope from these"
    )


class HoldersByLicenseOut(BaseModel):
    """The `licenses` view: its size grows with licenses and samples, not with their product."""

    licenses: list[LicenseHolding]
    samples: list[SampleRef] = Field(description="Each requested sample the registry knows, once")
    models: list[LicensedModel]
    unknown_sample_ids: list[str] = Field(
        description="Requested ids the registry has never heard of (no sample, no license)"
    )
