from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from registry.auth import LicenseeOrOperator, visible_licensee
from registry.context import Ctx
from registry.db import DbSession
from registry.licenses import repository, service
from registry.licenses.schemas import LicenseIn, LicenseOut, LicenseSampleOut, LicenseStatus
from rescind_common.auth import RequireOperator
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of

router = APIRouter(prefix="/v1/licenses", tags=["licenses"])


@router.post(
    "",
    status_code=201,
    response_model=LicenseOut,
    summary="Record a license (operator); 409 unless an active consent covers it",
    responses={200: {"description": "The same license was already recorded", "model": LicenseOut}},
)
def create_license(
    body: LicenseIn, principal: RequireOperator, session: DbSession, ctx: Ctx, response: Response
) -> LicenseOut:
    service.check_size(ctx, body)
    # Before `session` is first used: its transaction must not be open while we wait.
    service.wait_for_consent(ctx, body)
    license, created = service.record(session, body)
    if not created:
        response.status_code = 200
    return service.to_out(license)


@router.get("", response_model=Page[LicenseOut], summary="List licenses (licensee: own; operator: all)")
def list_licenses(
    principal: LicenseeOrOperator,
    session: DbSession,
    licensee_id: Annotated[str | None, Query(max_length=64, description="Operators only")] = None,
    status: Annotated[LicenseStatus | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[LicenseOut]:
    own = visible_licensee(principal)
    if own is not None and licensee_id is not None and licensee_id != own:
        return Page(items=[])
    rows = repository.page(session, own or licensee_id, status, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: [service.to_out(r) for r in part])


@router.get("/{license_id}", response_model=LicenseOut, summary="Read a license (licensee: own)")
def get_license(license_id: str, principal: LicenseeOrOperator, session: DbSession) -> LicenseOut:
    return service.to_out(service.visible(session, license_id, visible_licensee(principal)))


@router.get(
    "/{license_id}/samples",
    response_model=Page[LicenseSampleOut],
    summary="A license's samples, withdrawn ones with when and by which revocation",
)
def list_license_samples(
    license_id: str,
    principal: LicenseeOrOperator,
    session: DbSession,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[LicenseSampleOut]:
    license = service.visible(session, license_id, visible_licensee(principal))
    rows = repository.samples_page(session, license.id, decode_cursor(cursor), limit + 1)

    def out(part: Sequence[Any]) -> list[LicenseSampleOut]:
        return [
            LicenseSampleOut(
                sample_id=ls.sample_id,
                sha256=ps.sha256 if ps else None,
                kind=ps.kind if ps else None,
                revoked_at=ls.revoked_at,
                revocation_id=ls.revocation_id,
            )
            for ls, ps in part
        ]

    return page_of(rows, limit, out, key=lambda row: row[0].sample_id)
