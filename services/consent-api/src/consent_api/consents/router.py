from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from consent_api.consents import repository, service
from consent_api.consents.schemas import ConsentDetail, ConsentIn, ConsentOut, ConsentStatus
from consent_api.context import AppContext, Ctx
from consent_api.db import DbSession
from consent_api.revocations import service as revocations
from consent_api.revocations.schemas import ConsentRevokeIn, RevocationOut
from consent_api.subjects import service as subjects
from rescind_common.auth import CurrentSubject, Principal
from rescind_common.db import run_and_commit
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/consents", tags=["consents"])


@router.post(
    "", status_code=201, response_model=ConsentDetail, summary="Grant consent; returns a signed receipt"
)
async def grant_consent(
    body: ConsentIn, principal: CurrentSubject, session: DbSession, ctx: Ctx
) -> ConsentDetail:
    # async: the database work and the commit take one worker-thread hop and the answer is checked
    # on the event loop (a sync endpoint would need more hops, while holding its connection).
    return await run_and_commit(session, service.grant_as, session, ctx, principal, body)


@router.get("", response_model=Page[ConsentOut], summary="List own consents")
def list_consents(
    principal: CurrentSubject,
    session: DbSession,
    ctx: Ctx,
    status: Annotated[ConsentStatus | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ConsentOut]:
    subject = subjects.existing(session, ctx, principal)
    if subject is None:
        return Page(items=[])
    rows = repository.page(session, subject.id, status, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: [service.to_out(c) for c in part])


@router.get("/{consent_id}", response_model=ConsentDetail, summary="Read one own consent")
def get_consent(consent_id: str, principal: CurrentSubject, session: DbSession, ctx: Ctx) -> ConsentDetail:
    subject = subjects.existing(session, ctx, principal)
    consent = repository.get(session, subject.id, consent_id) if subject else None
    if consent is None:
        raise Problem(404, f"No consent {consent_id}.")
    return service.to_detail(session, consent)


@router.post(
    "/{consent_id}/revoke",
    status_code=202,
    response_model=RevocationOut,
    summary="Revoke a consent, whole or some of its samples",
)
async def revoke_consent(
    consent_id: str,
    principal: CurrentSubject,
    session: DbSession,
    ctx: Ctx,
    body: ConsentRevokeIn | None = None,
) -> RevocationOut:
    return await run_and_commit(
        session, _revoke, session, ctx, principal, consent_id, body or ConsentRevokeIn()
    )


def _revoke(
    session: Session, ctx: AppContext, principal: Principal, consent_id: str, body: ConsentRevokeIn
) -> RevocationOut:
    subject = subjects.current(session, ctx, principal, lock=True)
    revocation = revocations.revoke_consent(session, ctx, subject, consent_id, body.sample_ids, body.reason)
    return revocations.to_out(revocation)
