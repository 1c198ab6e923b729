"""consent-api: the seller-facing consent service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from consent_api import models  # noqa: F401  (registers every table)
from consent_api.audit import service as audit_service
from consent_api.audit.router import checkpoints_router as audit_checkpoints_router
from consent_api.audit.router import router as audit_router
from consent_api.config import ConsentSettings
from consent_api.consents.router import router as consents_router
from consent_api.context import AppContext
from consent_api.expiry import ExpiryScheduler
from consent_api.keys import MasterKey
from consent_api.proofs.router import router as proofs_router
from consent_api.receipts.router import router as receipts_router
from consent_api.receipts.signer import ReceiptSigner
from consent_api.revocations.router import router as revocations_router
from consent_api.rights.router import router as rights_router
from consent_api.samples.router import router as samples_router
from consent_api.subjects.router import router as profile_router
from rescind_common.app import create_service_app
from rescind_common.audit_chain import CheckpointLoop
from rescind_common.db import DbAdmission, make_engine, make_session_factory

SERVICE = "consent-api"
VERSION = "0.1.0"


# Bodies up to RESCIND_MAX_BATCH_BODY_BYTES here (RESCIND_MAX_BODY_BYTES elsewhere); the ingress
# (deploy/k8s/base/apps/ingress.yaml) routes these paths with the larger limit too.
BATCH_PATHS = ("/v1/samples/batch", "/v1/consents", "/v1/revocations")


def create_app(settings: ConsentSettings | None = None, *, run_scheduler: bool | None = None) -> FastAPI:
    settings = settings or ConsentSettings()
    engine = make_engine(
        settings.consent_database_url,
        pool_size=settings.consent_db_pool_size,
        max_overflow=settings.consent_db_max_overflow,
        pool_timeout=settings.consent_db_pool_timeout_seconds,
    )
    ctx = AppContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        master=MasterKey.from_settings(settings),
        signer=ReceiptSigner.from_settings(settings),
    )
    scheduler_on = settings.consent_run_scheduler if run_scheduler is None else run_scheduler
    scheduler = ExpiryScheduler(ctx, settings.consent_expiry_interval_seconds)
    checkpoints = CheckpointLoop(
        engine,
        settings.audit_checkpoint_interval_seconds,
        lambda conn: audit_service.checkpoint(conn, settings, ctx.signer),
        SERVICE,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if scheduler_on:
            scheduler.start()
        checkpoints.start()
        yield
        checkpoints.close()
        scheduler.stop()
        engine.dispose()

    app = create_service_app(
        ctx,
        service=SERVICE,
        title="Rescind consent-api",
        version=VERSION,
        description="Sellers register samples, grant consent with signed receipts, and withdraw it.",
        routers=[
            samples_router,
            consents_router,
            revocations_router,
            proofs_router,
            rights_router,
            profile_router,
            audit_router,
            audit_checkpoints_router,
            receipts_router,
        ],
        max_json_items=max(settings.consent_max_sample_ids, settings.consent_max_batch_samples),
        batch_paths=BATCH_PATHS,
        lifespan=lifespan,
        # Requests never outnumber the pooled connections; the overflow is for the scheduler and probes.
        db_admission=DbAdmission(settings.consent_db_pool_size, settings.consent_db_pool_timeout_seconds),
        max_in_flight=settings.max_in_flight,
    )
    app.state.expiry = scheduler
    return app
