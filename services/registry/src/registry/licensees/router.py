from __future__ import annotations

from fastapi import APIRouter

from registry.auth import LicenseeOrOperator
from registry.db import DbSession
from registry.licensees import repository, service
from registry.licensees.schemas import LicenseeIn, LicenseeOut
from rescind_common.auth import RequireOperator
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of

router = APIRouter(prefix="/v1/licensees", tags=["licensees"])


@router.post("", status_code=201, response_model=LicenseeOut, summary="Create a licensee (operator)")
def create_licensee(body: LicenseeIn, principal: RequireOperator, session: DbSession) -> LicenseeOut:
    return service.to_out(service.create(session, body))


@router.get("", response_model=Page[LicenseeOut], summary="List licensees (operator)")
def list_licensees(
    principal: RequireOperator, session: DbSession, limit: Limit = 100, cursor: Cursor = None
) -> Page[LicenseeOut]:
    rows = repository.page(session, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: [service.to_out(r) for r in part])


@router.get(
    "/{licensee_id}", response_model=LicenseeOut, summary="Read a licensee (operator, or the licensee itself)"
)
def get_licensee(licensee_id: str, principal: LicenseeOrOperator, session: DbSession) -> LicenseeOut:
    return service.to_out(service.visible(session, principal, licensee_id))
