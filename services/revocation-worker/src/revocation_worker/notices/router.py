from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query

from rescind_common.auth import CurrentLicensee, RequireOperator
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, encode_cursor, page_of
from rescind_common.problems import PROBLEM_BASE, Problem, field_error
from revocation_worker.context import Ctx
from revocation_worker.db import DbSession
from revocation_worker.delivery import dead_letter_repository as dead_letter_repo
from revocation_worker.notices import repository, service
from revocation_worker.notices.models import Notice
from revocation_worker.notices.schemas import AckIn, NoticeOut, NoticeStatus, RedriveIn, RedriveOut, SampleRef

router = APIRouter(prefix="/v1/notices", tags=["notices"])
ops_router = APIRouter(prefix="/v1/operator", tags=["operator"])


def _own(session: DbSession, licensee_id: str, notice_id: str, *, lock: bool = False) -> Notice:
    notice = repository.get_own(session, licensee_id, notice_id, lock=lock)
    if notice is None:
        raise Problem(404, f"No notice {notice_id}.")
    return notice


def _own_for_change(session: DbSession, licensee_id: str, notice_id: str) -> Notice:
    """The caller's notice, locked for a change that also touches its deliveries."""
    _own(session, licensee_id, notice_id)
    return service.lock_for_change(session, notice_id)


@router.get("", response_model=Page[NoticeOut], summary="List own notices")
def list_notices(
    licensee: CurrentLicensee,
    session: DbSession,
    ctx: Ctx,
    status: Annotated[NoticeStatus | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[NoticeOut]:
    rows = repository.page(session, licensee.sub, status, decode_cursor(cursor), limit + 1)
    return page_of(
        rows, limit, lambda part: [service.to_out(session, ctx, n, with_deliveries=False) for n in part]
    )


@router.get("/{notice_id}", response_model=NoticeOut, summary="Read one own notice")
def get_notice(notice_id: str, licensee: CurrentLicensee, session: DbSession, ctx: Ctx) -> NoticeOut:
    return service.to_out(session, ctx, _own(session, licensee.sub, notice_id))


@router.get("/{notice_id}/samples", response_model=Page[SampleRef], summary="Every sample of one own notice")
def notice_samples(
    notice_id: str, licensee: CurrentLicensee, session: DbSession, limit: Limit = 500, cursor: Cursor = None
) -> Page[SampleRef]:
    notice = _own(session, licensee.sub, notice_id)
    after = cursor and decode_cursor(cursor)
    rows = repository.samples_page(session, notice, after, limit + 1)
    return page_of(
        rows,
        limit,
        lambda part: [SampleRef(sample_id=s.sample_id, sha256=s.sha256, kind=s.kind) for s in part],
        key=lambda row: row.sample_id,
    )


@router.post(
    "/{notice_id}/ack",
    response_model=NoticeOut,
    summary="Answer: the samples' outcome, an action per model, evidence",
)
def ack_notice(
    notice_id: str, body: AckIn, licensee: CurrentLicensee, session: DbSession, ctx: Ctx
) -> NoticeOut:
    notice = service.acknowledge(session, ctx, _own_for_change(session, licensee.sub, notice_id), body)
    return service.to_out(session, ctx, notice)


@router.post(
    "/{notice_id}/redeliver",
    status_code=202,
    response_model=NoticeOut,
    summary="Send it again (subject to backoff)",
)
def redeliver_notice(notice_id: str, licensee: CurrentLicensee, session: DbSession, ctx: Ctx) -> NoticeOut:
    # Before anything is read: a licensee looping redeliver is turned away at the door.
    wait = ctx.redeliveries.take(f"redeliver:{licensee.sub}")
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise Problem(
            429,
            f"Too many redeliveries by this licensee; retry in {retry_after} s.",
            type_=PROBLEM_BASE + "redeliver-rate-limited",
            headers={"Retry-After": str(retry_after)},
        )
    notice = _own_for_change(session, licensee.sub, notice_id)
    service.redeliver(session, ctx, notice)
    return service.to_out(session, ctx, notice)


@ops_router.get("/dead-letters", summary="Dead-lettered deliveries (operator)")
def dead_letters(
    _: RequireOperator,
    session: DbSession,
    licensee_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    raw = decode_cursor(cursor)
    after = int(raw[4:]) if raw and raw.startswith("dlv_") and raw[4:].isdigit() else None
    if raw and after is None:
        raise Problem(400, "The cursor is not valid.", errors=[field_error("query.cursor", "invalid")])
    rows = dead_letter_repo.dead_deliveries(session, licensee_id, after, limit + 1)
    return {
        "total": dead_letter_repo.count_dead(session, licensee_id),
        "next_cursor": encode_cursor(f"dlv_{rows[limit - 1].id}") if len(rows) > limit else None,
        "items": [
            {
                "notice_id": d.notice_id,
                "endpoint_id": d.endpoint_id,
                "kind": d.kind,
                "licensee_id": d.licensee_id,
                "attempts": d.attempts,
                "last_attempt_at": d.last_attempt_at,
                "last_status_code": d.last_status_code,
                "last_error": d.last_error,
            }
            for d in rows[:limit]
        ],
    }


@ops_router.post(
    "/dead-letters/redrive", response_model=RedriveOut, summary="Re-drive dead-lettered deliveries"
)
def redrive(body: RedriveIn, _: RequireOperator, session: DbSession) -> RedriveOut:
    return RedriveOut(redriven=service.redrive_dead(session, body.licensee_id, body.endpoint_id))


@ops_router.get("/notices", response_model=Page[NoticeOut], summary="All notices (operator)")
def all_notices(
    _: RequireOperator,
    session: DbSession,
    ctx: Ctx,
    status: Annotated[NoticeStatus | None, Query()] = None,
    revocation_id: Annotated[str | None, Query(max_length=40)] = None,
    licensee_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[NoticeOut]:
    rows = repository.page(session, licensee_id, status, decode_cursor(cursor), limit + 1, revocation_id)
    return page_of(
        rows, limit, lambda part: [service.to_out(session, ctx, n, with_deliveries=False) for n in part]
    )
