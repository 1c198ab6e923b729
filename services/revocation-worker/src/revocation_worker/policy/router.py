from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from rescind_common.auth import RequireOperator
from revocation_worker.context import Ctx
from revocation_worker.db import DbSession
from revocation_worker.policy import repository, service
from revocation_worker.policy.schemas import PolicyIn, PolicyOut

router = APIRouter(prefix="/v1/licensees", tags=["operator"])

LicenseeId = Annotated[str, Path(max_length=64)]


@router.get("/{licensee_id}/policy", response_model=PolicyOut, summary="A licensee's deadline (operator)")
def get_policy(licensee_id: LicenseeId, _: RequireOperator, session: DbSession, ctx: Ctx) -> PolicyOut:
    return service.to_out(ctx.settings, licensee_id, repository.get(session, licensee_id))


@router.put(
    "/{licensee_id}/policy", response_model=PolicyOut, summary="Override a licensee's deadline (operator)"
)
def put_policy(
    licensee_id: LicenseeId, body: PolicyIn, _: RequireOperator, session: DbSession, ctx: Ctx
) -> PolicyOut:
    return service.put(session, ctx.settings, licensee_id, body)
