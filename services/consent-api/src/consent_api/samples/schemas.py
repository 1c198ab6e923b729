from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SampleKind = Literal["face_image", "voice_recording", "handwriting", "demographics", "other"]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$", to_lower=True)]
SampleId = Annotated[str, StringConstraints(pattern=r"^smp_[0-9a-z]{26}$")]
MediaType = Annotated[str, StringConstraints(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=255)]
AttrKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttrValue = Annotated[str, StringConstraints(max_length=1024)] | int | float | bool | None


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SampleKind
    sha256: Sha256Hex = Field(
        description="Hex SHA-256 of the sample's content; the media itself is never sent"
    )
    media_type: MediaType | None = None
    attributes: dict[AttrKey, AttrValue] | None = Field(
        default=None, max_length=32, description="Flat metadata; stored encrypted under the subject's key"
    )


class SampleBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[SampleIn] = Field(min_length=1)


class SampleOut(BaseModel):
    id: str
    kind: SampleKind
    sha256: str
    media_type: str | None
    attributes: dict[str, AttrValue] | None
    created_at: dt.datetime


class SampleBatchOut(BaseModel):
    items: list[SampleOut]
