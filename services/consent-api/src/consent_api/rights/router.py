from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from consent_api.context import Ctx
from consent_api.db import DbSession
from consent_api.rights import repository, service
from consent_api.rights.models import RightsRequest
from consent_api.rights.schemas import RightsRequestIn, RightsRequestOut
from consent_api.subjects import service as subjects
from rescind_common.auth import CurrentSubject
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/rights-requests", tags=["rights requests"])


def _outs(session: Session, reqs: list[RightsRequest]) -> list[RightsRequestOut]:
    states = service.statuses(session, reqs)
    return [_out(r, *states[r.id]) for r in reqs]


def _out(
    req: RightsRequest, status: str, completed_at: dt.datetime | None, export: dict[str, Any] | None = None
) -> RightsRequestOut:
    return RightsRequestOut(
        id=req.id,
        type=req.type,
        status=status,
        created_at=req.created_at,
        completed_at=completed_at,
        revocation_id=req.revocation_id,
        export_url=f"/v1/rights-requests/{req.id}/export" if req.type == "access" else None,
        export=export,
    )


@router.post(
    "",
    response_model=RightsRequestOut,
    status_code=201,
    summary="Access (201, with the export) or erasure (202: revoke all, notify holders, shred)",
    responses={202: {"model": RightsRequestOut}},
)
def create_rights_request(
    body: RightsRequestIn, principal: CurrentSubject, session: DbSession, ctx: Ctx, response: Response
) -> RightsRequestOut:
    subject = subjects.current(session, ctx, principal, lock=True)
    if body.type == "access":
        req = service.access(session, ctx, subject)
        session.flush()
        return _out(req, "completed", req.completed_at, service.export(session, ctx, subject))
    req = service.erase(session, ctx, subject)
    response.status_code = 202
    return _out(req, req.status, req.completed_at)


@router.get("", response_model=Page[RightsRequestOut], summary="List own rights requests")
def list_rights_requests(
    principal: CurrentSubject, session: DbSession, ctx: Ctx, limit: Limit = 100, cursor: Cursor = None
) -> Page[RightsRequestOut]:
    subject = subjects.existing(session, ctx, principal)
    if subject is None:
        return Page(items=[])
    rows = repository.page(session, subject.id, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: _outs(session, list(part)))


@router.get("/{request_id}", response_model=RightsRequestOut, summary="Read one rights request")
def get_rights_request(
    request_id: str, principal: CurrentSubject, session: DbSession, ctx: Ctx
) -> RightsRequestOut:
    subject = subjects.existing(session, ctx, principal)
    req = repository.get(session, subject.id, request_id) if subject else None
    if req is None:
        raise Problem(404, f"No rights request {request_id}.")
    return _outs(session, [req])[0]


@router.get("/{request_id}/export", summary="The access export, generated fresh (JSON)")
def get_export(request_id: str, principal: CurrentSubject, session: DbSession, ctx: Ctx) -> dict[str, Any]:
    subject = subjects.existing(session, ctx, principal)
    req = repository.get(session, subject.id, request_id) if subject else None
    if subject is None or req is None or req.type != "access":
        raise Problem(404, f"No access request {request_id}.")
    return service.export(session, ctx, subject)
