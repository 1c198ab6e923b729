from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from consent_api.context import AppContext, Ctx
from consent_api.db import DbSession
from consent_api.samples import repository, service
from consent_api.samples.schemas import SampleBatchIn, SampleBatchOut, SampleIn, SampleOut
from consent_api.subjects import service as subjects
from rescind_common.auth import CurrentSubject, Principal
from rescind_common.db import run_and_commit
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/samples", tags=["samples"])


@router.post("", status_code=201, response_model=SampleOut, summary="Register one sample's fingerprint")
async def create_sample(body: SampleIn, principal: CurrentSubject, session: DbSession, ctx: Ctx) -> SampleOut:
    # async: one worker-thread hop for the database work and the commit; the answer is checked on
    # the event loop.
    return await run_and_commit(session, _register_one, session, ctx, principal, body)


def _register_one(session: Session, ctx: AppContext, principal: Principal, body: SampleIn) -> SampleOut:
    subject = subjects.current(session, ctx, principal, lock=True)
    return service.register(session, ctx, subject, [body], field="body")[0]


@router.post(
    "/batch", status_code=201, response_model=SampleBatchOut, summary="Register many samples at once"
)
def create_samples(
    body: SampleBatchIn, principal: CurrentSubject, session: DbSession, ctx: Ctx
) -> SampleBatchOut:
    limit = ctx.settings.consent_max_batch_samples
    if len(body.samples) > limit:
        raise Problem(413, f"A batch holds at most {limit} samples.", limit=limit)
    subject = subjects.current(session, ctx, principal, lock=True)
    return SampleBatchOut(items=service.register(session, ctx, subject, body.samples, field="body.samples"))


@router.get("", response_model=Page[SampleOut], summary="List own samples")
def list_samples(
    principal: CurrentSubject, session: DbSession, ctx: Ctx, limit: Limit = 100, cursor: Cursor = None
) -> Page[SampleOut]:
    subject = subjects.existing(session, ctx, principal)
    if subject is None:
        return Page(items=[])
    rows = repository.page(session, subject.id, decode_cursor(cursor), limit + 1)
    key = subjects.data_key(session, ctx, subject, create=False)
    return page_of(rows, limit, lambda part: [service.to_out(session, ctx, subject, s, key) for s in part])


@router.get("/{sample_id}", response_model=SampleOut, summary="Read one own sample")
def get_sample(sample_id: str, principal: CurrentSubject, session: DbSession, ctx: Ctx) -> SampleOut:
    subject = subjects.existing(session, ctx, principal)
    sample = repository.get(session, subject.id, sample_id) if subject else None
    if subject is None or sample is None:
        raise Problem(404, f"No sample {sample_id}.")
    key = subjects.data_key(session, ctx, subject, create=False)
    return service.to_out(session, ctx, subject, sample, key)
