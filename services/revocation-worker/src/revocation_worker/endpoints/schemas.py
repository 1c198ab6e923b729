from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="HTTPS URL receiving Standard Webhooks")
    description: str | None = Field(default=None, max_length=500)


class EndpointOut(BaseModel):
    id: str
    licensee_id: str
    url: str
    description: str | None
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    disabled_at: dt.datetime | None
    failing_since: dt.datetime | None
    last_success_at: dt.datetime | None
    created_at: dt.datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="whsec_... — shown once; verify deliveries with it")


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expire_old_now: bool = Field(
        default=False,
        description="Stop signing with the old secret(s) at once (a leaked secret); "
        "default: the old one keeps signing beside the new one for the grace period",
    )


class SecretRotated(BaseModel):
    id: str
    secret: str = Field(description="The new whsec_... secret, shown once")
    previous_secret_expires_at: dt.datetime = Field(
        description="Until then deliveries carry signatures by both the old and the new secret "
        "(now, with expire_old_now)"
    )
