from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AckKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jwk: dict[str, Any] = Field(
        description="A public JWK: OKP/Ed25519 (EdDSA) or EC/P-256 (ES256); its `kid` (else its RFC 7638 "
        "thumbprint) names it in a signature's header"
    )


class AckKeyOut(BaseModel):
    id: str
    kid: str
    alg: Literal["EdDSA", "ES256"]
    jwk: dict[str, Any]
    created_at: dt.datetime
