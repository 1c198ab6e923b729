from __future__ import annotations

from fastapi import APIRouter, Response

from rescind_common.auth import CurrentLicensee
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of
from rescind_common.problems import Problem
from revocation_worker.ackkeys import repository, service
from revocation_worker.ackkeys.schemas import AckKeyIn, AckKeyOut
from revocation_worker.db import DbSession

router = APIRouter(prefix="/v1/ack-keys", tags=["ack keys"])


@router.post("", status_code=201, response_model=AckKeyOut, summary="Register a key that signs own acks")
def create_key(body: AckKeyIn, licensee: CurrentLicensee, session: DbSession) -> AckKeyOut:
    return service.to_out(service.create(session, licensee.sub, body))


@router.get("", response_model=Page[AckKeyOut], summary="List own ack keys")
def list_keys(
    licensee: CurrentLicensee, session: DbSession, limit: Limit = 100, cursor: Cursor = None
) -> Page[AckKeyOut]:
    rows = repository.page(session, licensee.sub, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: [service.to_out(k) for k in part])


@router.get("/{key_id}", response_model=AckKeyOut, summary="Read one own ack key")
def get_key(key_id: str, licensee: CurrentLicensee, session: DbSession) -> AckKeyOut:
    key = repository.get_own(session, licensee.sub, key_id)
    if key is None:
        raise Problem(404, f"No ack key {key_id}.")
    return service.to_out(key)


@router.delete("/{key_id}", status_code=204, summary="Delete one own ack key (past acks stay verified)")
def delete_key(key_id: str, licensee: CurrentLicensee, session: DbSession) -> Response:
    key = repository.get_own(session, licensee.sub, key_id)
    if key is None:
        raise Problem(404, f"No ack key {key_id}.")
    repository.delete(session, key)
    return Response(status_code=204)
