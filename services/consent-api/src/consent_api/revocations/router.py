from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from consent_api.context import AppContext, Ctx
from consent_api.db import DbSession
from consent_api.revocations import repository, service
from consent_api.revocations.schemas import RevocationIn, RevocationOut
from consent_api.subjects import service as subjects
from rescind_common.auth import CurrentSubject, Principal
from rescind_common.db import run_and_commit
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/revocations", tags=["revocations"])


@router.post("", status_code=202, response_model=RevocationOut, summary="Revoke by scope")
async def create_revocation(
    body: RevocationIn, principal: CurrentSubject, session: DbSession, ctx: Ctx
) -> RevocationOut:
    # async: one worker-thread hop for the database work and the commit; the answer is checked on
    # the event loop.
    return await run_and_commit(session, _revoke_by_scope, session, ctx, principal, body)


def _revoke_by_scope(
    session: Session, ctx: AppContext, principal: Principal, body: RevocationIn
) -> RevocationOut:
    subject = subjects.current(session, ctx, principal, lock=True)
    return service.to_out(service.revoke_by_scope(session, ctx, subject, body))


@router.get("", response_model=Page[RevocationOut], summary="List own revocations")
def list_revocations(
    principal: CurrentSubject, session: DbSession, ctx: Ctx, limit: Limit = 100, cursor: Cursor = None
) -> Page[RevocationOut]:
    subject = subjects.existing(session, ctx, principal)
    if subject is None:
        return Page(items=[])
    rows = repository.page(session, subject.id, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: service.to_out_with_notices(session, part))


@router.get("/{revocation_id}", response_model=RevocationOut, summary="Read a revocation and who was told")
def get_revocation(
    revocation_id: str, principal: CurrentSubject, session: DbSession, ctx: Ctx
) -> RevocationOut:
    subject = subjects.existing(session, ctx, principal)
    revocation = repository.get(session, subject.id, revocation_id) if subject else None
    if revocation is None:
        raise Problem(404, f"No revocation {revocation_id}.")
    return service.to_out_with_notices(session, [revocation])[0]
