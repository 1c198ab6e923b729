from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class ProfileOut(BaseModel):
    subject_id: str
    display_name: str | None = None
    email: str | None = None
    country: str | None = None
