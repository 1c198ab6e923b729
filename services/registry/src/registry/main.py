"""registry: licensees, licenses backed by consent, model lineage and the holders lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from registry import models  # noqa: F401  (registers every table)
from registry.config import RegistrySettings
from registry.context import AppContext
from registry.db import make_registry_engine
from registry.holders.router import router as holders_router
from registry.licensees.router import router as licensees_router
from registry.licenses.router import router as licenses_router
from registry.lineage.router import router as models_router
from rescind_common.app import create_app as create_base_app
from rescind_common.auth import TokenVerifier
from rescind_common.db import make_session_factory, ping
from rescind_common.kafka import broker_reachable

SERVICE = "registry"
VERSION = "0.1.0"


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    engine = make_registry_engine(settings.registry_database_url, pool_size=settings.registry_db_pool_size)
    ctx = AppContext(settings=settings, engine=engine, session_factory=make_session_factory(engine))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = create_base_app(
        service=SERVICE,
        title="Rescind registry",
        version=VERSION,
        description=(
            "Licensees, licenses backed by an active consent, model lineage, and who holds which samples."
        ),
        readiness={
            "database": lambda: ping(engine),
            "kafka": lambda: broker_reachable(settings.kafka_bootstrap),
        },
        max_body_bytes=settings.max_body_bytes,
        rate_limit_per_second=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
        max_json_items=max(
            settings.registry_max_license_samples,
            settings.registry_max_holder_samples,
            settings.registry_max_model_licenses,
        ),
        path_body_limits={
            "/v1/licenses": settings.max_batch_body_bytes,
            "/v1/models": settings.max_batch_body_bytes,
            "/v1/holders": settings.max_batch_body_bytes,
        },
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.session_factory = ctx.session_factory
    app.state.token_verifier = TokenVerifier(settings)
    for router in (licensees_router, licenses_router, models_router, holders_router):
        app.include_router(router)
    return app
