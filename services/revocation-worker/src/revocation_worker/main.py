"""revocation-worker's HTTP API: licensees' endpoints, notices and acks; operators' views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rescind_common.app import create_app as create_base_app
from rescind_common.auth import TokenVerifier
from rescind_common.db import ping
from rescind_common.kafka import broker_reachable
from revocation_worker import models  # noqa: F401  (registers every table)
from revocation_worker.config import WorkerSettings
from revocation_worker.endpoints.router import ops_router as endpoints_ops_router
from revocation_worker.endpoints.router import router as endpoints_router
from revocation_worker.notices.router import ops_router as notices_ops_router
from revocation_worker.notices.router import router as notices_router
from revocation_worker.runner import build_context

SERVICE = "revocation-worker"
VERSION = "0.1.0"


def create_app(settings: WorkerSettings | None = None) -> FastAPI:
    settings = settings or WorkerSettings()
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.engine.dispose()

    app = create_base_app(
        service=SERVICE,
        title="Rescind revocation-worker",
        version=VERSION,
        description="Licensees register webhook endpoints, read and acknowledge revocation notices.",
        readiness={
            "database": lambda: ping(ctx.engine),
            "kafka": lambda: broker_reachable(settings.kafka_bootstrap),
        },
        max_body_bytes=settings.max_body_bytes,
        rate_limit_per_second=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
        max_json_items=10_000,  # an ack names at most 10,000 models
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.session_factory = ctx.session_factory
    app.state.token_verifier = TokenVerifier(settings)
    for router in (endpoints_router, endpoints_ops_router, notices_router, notices_ops_router):
        app.include_router(router)
    return app
