"""revocation-worker's HTTP API: licensees' endpoints, notices and acks; operators' views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rescind_common.app import create_service_app
from rescind_common.audit_chain import CheckpointLoop
from revocation_worker import models  # noqa: F401  (registers every table)
from revocation_worker.ackkeys.router import router as ackkeys_router
from revocation_worker.audit import service as audit_service
from revocation_worker.audit.router import router as audit_router
from revocation_worker.config import WorkerSettings
from revocation_worker.endpoints.router import ops_router as endpoints_ops_router
from revocation_worker.endpoints.router import router as endpoints_router
from revocation_worker.notices.router import ops_router as notices_ops_router
from revocation_worker.notices.router import router as notices_router
from revocation_worker.policy.router import router as policy_router
from revocation_worker.runner import build_context

SERVICE = "revocation-worker"
VERSION = "0.1.0"


def create_app(settings: WorkerSettings | None = None) -> FastAPI:
    settings = settings or WorkerSettings()
    ctx = build_context(settings)
    signer = audit_service.signer(settings)
    checkpoints = CheckpointLoop(
        ctx.engine,
        settings.audit_checkpoint_interval_seconds,
        lambda conn: audit_service.checkpoint(conn, settings, signer),
        SERVICE,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        checkpoints.start()
        yield
        checkpoints.close()
        ctx.engine.dispose()

    app = create_service_app(
        ctx,
        service=SERVICE,
        title="Rescind revocation-worker",
        version=VERSION,
        description=(
            "Licensees register webhook endpoints and ack keys, read and answer revocation notices; "
            "operators set deadlines."
        ),
        routers=[
            endpoints_router,
            endpoints_ops_router,
            notices_router,
            notices_ops_router,
            ackkeys_router,
            policy_router,
            audit_router,
        ],
        max_json_items=10_000,  # an ack names at most 10,000 models
        lifespan=lifespan,
    )
    app.state.audit_signer = signer
    return app
