from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from consent_api.audit import repository, service
from consent_api.context import Ctx
from consent_api.db import DbSession
from rescind_common import audit_api
from rescind_common.audit_chain import Signer
from rescind_common.auth import RequireOperator

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "/verify", summary="Verify every subject's audit hash chain, optionally against a checkpoint (operator)"
)
def verify(
    _: RequireOperator,
    session: DbSession,
    ctx: Ctx,
    checkpoint: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> dict[str, Any]:
    return service.verify(session, ctx.signer, checkpoint)


@router.get("/entries", summary="Audit entries: one subject's (subject_id) or every chain's (operator)")
def entries(
    _: RequireOperator,
    session: DbSession,
    subject_id: Annotated[str | None, Query(max_length=40)] = None,
    after_seq: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=400, description="Opaque cursor from `next_cursor`")
    ] = None,
) -> dict[str, Any]:
    after: tuple[str, int] | None = None
    if cursor:
        after = audit_api.entry_cursor(cursor)
    elif subject_id is not None:
        after = (subject_id, after_seq)
    rows = repository.SubjectChains().entries_page(session.connection(), subject_id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": rows,
        "next_after_seq": rows[-1]["seq"] if more and subject_id is not None else None,
        "next_cursor": audit_api.encode_cursor([rows[-1]["chain_id"], rows[-1]["seq"]]) if more else None,
    }


def _signer(request: Request) -> Signer:
    signer: Signer = request.app.state.ctx.signer
    return signer


# Heads and signed checkpoints (the receipt keys sign them: /.well-known/jwks.json).
checkpoints_router = audit_api.router(
    audit_api.AuditApi(service.SOURCE, service.TABLES, _signer), jwks=False, entries=False, verify_route=False
)
