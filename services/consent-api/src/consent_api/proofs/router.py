from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, Field

from consent_api.context import Ctx
from consent_api.db import DbSession
from consent_api.proofs import repository, service
from consent_api.subjects import service as subjects
from rescind_common.auth import Principal, Role, require_role
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/revocations", tags=["revocations"])

JOSE = "application/jose"


class ProofOut(BaseModel):
    proof: str = Field(
        description="Compact JWS (typ rescind-proof+jwt), verifiable with /.well-known/jwks.json"
    )


@router.get(
    "/{revocation_id}/proof",
    response_model=ProofOut,
    summary="The signed record of a revocation and what every holder did (subject: own; operator: any)",
    responses={200: {"content": {JOSE: {"schema": {"type": "string"}}}}},
)
def get_proof(
    revocation_id: str,
    principal: Annotated[Principal, require_role(Role.SUBJECT, Role.OPERATOR)],
    session: DbSession,
    ctx: Ctx,
    accept: Annotated[str | None, Header()] = None,
) -> ProofOut | Response:
    if principal.role == Role.OPERATOR:
        revocation = repository.revocation(session, revocation_id, None)
    else:
        subject = subjects.existing(session, ctx, principal)
        revocation = repository.revocation(session, revocation_id, subject.id) if subject else None
    if revocation is None:
        raise Problem(404, f"No revocation {revocation_id}.")
    token = service.proof(session, ctx, revocation)
    if accept and JOSE in accept.lower() and "json" not in accept.lower().replace(JOSE, ""):
        return Response(content=token, media_type=JOSE)
    return ProofOut(proof=token)
