"""registry: licensees, licenses backed by consent, model lineage and the holders lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from registry import models  # noqa: F401  (registers every table)
from registry.audit import service as audit_service
from registry.audit.router import router as audit_router
from registry.config import RegistrySettings
from registry.context import AppContext
from registry.db import make_registry_engine
from registry.holders.router import router as holders_router
from registry.licensees.router import router as licensees_router
from registry.licenses.router import router as licenses_router
from registry.lineage.router import router as models_router
from rescind_common.app import create_service_app
from rescind_common.audit_chain import CheckpointLoop
from rescind_common.db import make_session_factory

SERVICE = "registry"
VERSION = "0.1.0"


# Bodies up to RESCIND_MAX_BATCH_BODY_BYTES here (RESCIND_MAX_BODY_BYTES elsewhere); the ingress
# (deploy/k8s/base/apps/ingress.yaml) routes these paths with the larger limit too.
BATCH_PATHS = ("/v1/licenses", "/v1/models", "/v1/holders")


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    engine = make_registry_engine(settings.registry_database_url, pool_size=settings.registry_db_pool_size)
    ctx = AppContext(settings=settings, engine=engine, session_factory=make_session_factory(engine))
    signer = audit_service.signer(settings)
    checkpoints = CheckpointLoop(
        engine,
        settings.audit_checkpoint_interval_seconds,
        lambda conn: audit_service.checkpoint(conn, settings, signer),
        SERVICE,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        checkpoints.start()
        yield
        checkpoints.close()
        engine.dispose()

    app = create_service_app(
        ctx,
        service=SERVICE,
        title="Rescind registry",
        version=VERSION,
        description=(
            "Licensees, licenses backed by an active consent, model lineage, and who holds which samples."
        ),
        routers=[licensees_router, licenses_router, models_router, holders_router, audit_router],
        max_json_items=max(
            settings.registry_max_license_samples,
            settings.registry_max_holder_samples,
            settings.registry_max_model_licenses,
        ),
        batch_paths=BATCH_PATHS,
        lifespan=lifespan,
    )
    app.state.audit_signer = signer
    return app
