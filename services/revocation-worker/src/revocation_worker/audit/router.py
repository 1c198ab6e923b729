from __future__ import annotations

from fastapi import Request

from rescind_common import audit_api
from rescind_common.audit_chain import Signer
from revocation_worker.audit.service import SOURCE, TABLES


def _signer(request: Request) -> Signer:
    key: Signer = request.app.state.audit_signer
    return key


router = audit_api.router(audit_api.AuditApi(SOURCE, TABLES, _signer), jwks=True)
