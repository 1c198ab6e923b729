from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, EmailStr

from registry.schemas import Name


class LicenseeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    contact_email: EmailStr | None = None


class LicenseeOut(BaseModel):
    id: str
    name: str
    contact_email: str | None
    created_at: dt.datetime
