from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from consent_api.context import Ctx

router = APIRouter(tags=["receipts"])


@router.get("/.well-known/jwks.json", summary="Public keys that verify consent receipts")
def jwks(ctx: Ctx) -> dict[str, Any]:
    return ctx.signer.jwks()
