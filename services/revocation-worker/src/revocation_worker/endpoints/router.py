from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from rescind_common.auth import CurrentLicensee, RequireOperator
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of
from rescind_common.problems import Problem
from revocation_worker.context import Ctx
from revocation_worker.db import DbSession
from revocation_worker.endpoints import repository, service
from revocation_worker.endpoints.schemas import (
    EndpointCreated,
    EndpointIn,
    EndpointOut,
    RotateIn,
    SecretRotated,
)

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"])
ops_router = APIRouter(prefix="/v1/operator/endpoints", tags=["operator"])


@router.post("", status_code=201, response_model=EndpointCreated, summary="Register a webhook endpoint")
def create_endpoint(
    body: EndpointIn, licensee: CurrentLicensee, session: DbSession, ctx: Ctx
) -> EndpointCreated:
    endpoint, secret = service.create(session, ctx, licensee.sub, body)
    return EndpointCreated(**service.to_out(endpoint).model_dump(), secret=secret)


@router.get("", response_model=Page[EndpointOut], summary="List own endpoints")
def list_endpoints(
    licensee: CurrentLicensee, session: DbSession, limit: Limit = 100, cursor: Cursor = None
) -> Page[EndpointOut]:
    rows = repository.page(session, licensee.sub, None, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: [service.to_out(e) for e in part])


def _own(session: DbSession, licensee_id: str, endpoint_id: str, *, lock: bool = True) -> service.Endpoint:
    endpoint = repository.get_own(session, licensee_id, endpoint_id, lock=lock)
    if endpoint is None:
        raise Problem(404, f"No endpoint {endpoint_id}.")
    return endpoint


@router.get("/{endpoint_id}", response_model=EndpointOut, summary="Read one own endpoint")
def get_endpoint(endpoint_id: str, licensee: CurrentLicensee, session: DbSession) -> EndpointOut:
    # A read takes no row lock: it would make the recorder's dead-lettering skip this endpoint.
    return service.to_out(_own(session, licensee.sub, endpoint_id, lock=False))


@router.post(
    "/{endpoint_id}/rotate-secret", response_model=SecretRotated, summary="Rotate the signing secret"
)
def rotate_secret(
    endpoint_id: str,
    licensee: CurrentLicensee,
    session: DbSession,
    ctx: Ctx,
    body: RotateIn | None = None,
) -> SecretRotated:
    endpoint = _own(session, licensee.sub, endpoint_id)
    secret, expires = service.rotate(
        session, ctx, endpoint, expire_old_now=body is not None and body.expire_old_now
    )
    return SecretRotated(id=endpoint.id, secret=secret, previous_secret_expires_at=expires)


@router.post("/{endpoint_id}/enable", response_model=EndpointOut, summary="Re-enable a disabled endpoint")
def enable_endpoint(endpoint_id: str, licensee: CurrentLicensee, session: DbSession) -> EndpointOut:
    endpoint = _own(session, licensee.sub, endpoint_id)
    service.enable(session, endpoint)
    return service.to_out(endpoint)


@router.delete("/{endpoint_id}", status_code=204, summary="Delete an endpoint")
def delete_endpoint(endpoint_id: str, licensee: CurrentLicensee, session: DbSession) -> Response:
    endpoint = _own(session, licensee.sub, endpoint_id)
    endpoint.status = "disabled"
    endpoint.disabled_reason = "deleted by the licensee"
    service.cancel_deliveries(session, endpoint)
    session.delete(endpoint)
    return Response(status_code=204)


@ops_router.get("", response_model=Page[EndpointOut], summary="Failing or disabled endpoints (operator)")
def failing_endpoints(
    _: RequireOperator,
    session: DbSession,
    status: Annotated[Literal["active", "disabled"] | None, Query()] = None,
    failing: Annotated[bool, Query(description="only endpoints failing now or disabled")] = True,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[EndpointOut]:
    rows = repository.page(session, None, status, decode_cursor(cursor), limit + 1, failing=failing)
    return page_of(rows, limit, lambda part: [service.to_out(e) for e in part])
