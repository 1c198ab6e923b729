from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Response

from registry.context import Ctx
from registry.db import DbSession
from registry.holders import service
from registry.holders.schemas import HoldersByLicenseOut, HoldersIn, HoldersOut
from rescind_common.auth import Principal, Role, ServiceScope, forbidden, require_role
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/holders", tags=["holders"])

# Operators, and the two service callers: each scope opens one view (the one its caller reads).
HoldersCaller = Annotated[
    Principal, require_role(Role.OPERATOR, scopes=(ServiceScope.HOLDERS, ServiceScope.RECIPIENTS))
]
VIEW_SCOPE = {"licenses": ServiceScope.HOLDERS, "samples": ServiceScope.RECIPIENTS}


@router.post(
    "",
    response_model=HoldersOut | HoldersByLicenseOut,
    summary="Which licensees hold these samples, under which licenses, in which models (operator, or "
    "a service token: scope `holders` for view licenses, `recipients` for view samples)",
    description="`view: samples` (default) answers HoldersOut, `view: licenses` HoldersByLicenseOut.",
)
def lookup_holders(body: HoldersIn, principal: HoldersCaller, session: DbSession, ctx: Ctx) -> Response:
    if principal.role == Role.SERVICE and not principal.has_scope(VIEW_SCOPE[body.view]):
        raise forbidden(f"The view {body.view} needs a service token with scope {VIEW_SCOPE[body.view]}.")
    limit = ctx.settings.registry_max_holder_samples
    if len(body.sample_ids) > limit:
        raise Problem(413, f"A lookup names at most {limit} samples.", limit=limit)
    if body.view == "licenses":
        # Small whatever the fan-out (licenses + samples, not their product): validated once.
        out = HoldersByLicenseOut.model_validate(service.lookup_by_license(session, body.sample_ids))
        return Response(out.model_dump_json(), media_type="application/json")
    # Built from database rows in HoldersOut's shape: serialised as is, not validated again.
    body_out = json.dumps(service.lookup(session, body.sample_ids), separators=(",", ":"))
    return Response(body_out, media_type="application/json")
