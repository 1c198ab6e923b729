from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from registry.auth import LicenseeOrOperator, visible_licensee
from registry.context import Ctx
from registry.db import DbSession
from registry.lineage import repository, service
from registry.lineage.schemas import ModelIn, ModelOut
from rescind_common.auth import CurrentLicensee
from rescind_common.pagination import Cursor, Limit, Page, decode_cursor, page_of
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post(
    "", status_code=201, response_model=ModelOut, summary="Declare a model and what it was trained on"
)
def declare_model(body: ModelIn, principal: CurrentLicensee, session: DbSession, ctx: Ctx) -> ModelOut:
    model = service.declare(session, ctx, principal.sub, body)
    return service.to_out(session, [model])[0]


@router.get("", response_model=Page[ModelOut], summary="List models (licensee: own; operator: all)")
def list_models(
    principal: LicenseeOrOperator,
    session: DbSession,
    licensee_id: Annotated[str | None, Query(max_length=64, description="Operators only")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ModelOut]:
    own = visible_licensee(principal)
    if own is not None and licensee_id is not None and licensee_id != own:
        return Page(items=[])
    rows = repository.page(session, own or licensee_id, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda part: service.to_out(session, part))


@router.get("/{model_id}", response_model=ModelOut, summary="Read a model (licensee: own)")
def get_model(model_id: str, principal: LicenseeOrOperator, session: DbSession) -> ModelOut:
    own = visible_licensee(principal)
    model = repository.get(session, model_id)
    if model is None or (own is not None and model.licensee_id != own):
        raise Problem(404, f"No model {model_id}.")
    return service.to_out(session, [model])[0]
