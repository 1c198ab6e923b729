from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from consent_api.audit import repository, service
from consent_api.db import DbSession
from rescind_common.auth import RequireOperator

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/verify", summary="Verify every subject's audit hash chain (operator)")
def verify(_: RequireOperator, session: DbSession) -> dict[str, Any]:
    return service.verify(session)


@router.get("/entries", summary="A subject's audit entries (operator)")
def entries(
    _: RequireOperator,
    session: DbSession,
    subject_id: Annotated[str, Query(max_length=40)],
    after_seq: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    rows = repository.entries_for(session, subject_id, after_seq, limit)
    return {
        "items": [
            {
                "subject_id": e.subject_id,
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "entity_id": e.entity_id,
                "data": e.data,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in rows
        ],
        "next_after_seq": rows[-1].seq if len(rows) == limit else None,
    }
