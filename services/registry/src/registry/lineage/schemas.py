from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from registry.licenses.schemas import Dataset
from registry.schemas import LicenseId, Name, ShardId, Version


class ShardIn(BaseModel):
    """One training shard (SISA-style): unlearning a sample retrains only the shards that saw it."""

    model_config = ConfigDict(extra="forbid")

    shard_id: ShardId
    license_ids: list[LicenseId] = Field(default_factory=list)
    datasets: list[Dataset] = Field(default_factory=list, description="Every own license of these snapshots")


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    version: Version
    license_ids: list[LicenseId] = Field(default_factory=list, description="Licenses the whole model saw")
    datasets: list[Dataset] = Field(default_factory=list, description="Every own license of these snapshots")
    shards: list[ShardIn] = Field(default_factory=list)


class ShardOut(BaseModel):
    shard_id: str
    license_ids: list[str]


class ModelOut(BaseModel):
    id: str
    licensee_id: str
    name: str
    version: str
    created_at: dt.datetime
    license_ids: list[str] = Field(description="Licenses the whole model (not one shard) was trained on")
    shards: list[ShardOut]
    revoked_license_ids: list[str] = Field(
        description="Licenses it was trained on that have since been revoked: retrain or unlearn"
    )
