"""The FastAPI application: ``uvicorn --factory api.main:create_app``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI

from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from api.metrics import install_metrics, metrics_lifespan
from api.routes import calibration_sets, catalog, checkpoints, curve, events_stream, health, jobs
from api.routes.console import install_console
from core.settings import Settings, get_settings

API_PREFIX = "/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.getLogger("gisp").setLevel(logging.INFO)
    app = FastAPI(
        title="GISP service",
        version="1.0.0",
        description="Structured pruning of LLMs as jobs: submit, follow, download checkpoints.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served from local assets by install_console, not from a CDN
        redoc_url=None,
        lifespan=metrics_lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.state.metrics = install_metrics(app, settings)
    v1 = APIRouter(prefix=API_PREFIX)
    v1.include_router(events_stream.router)
    v1.include_router(jobs.router)
    v1.include_router(checkpoints.router)
    v1.include_router(catalog.router)
    v1.include_router(calibration_sets.router)
    v1.include_router(curve.router)
    app.include_router(v1)
    app.add_middleware(
        BodySizeLimit,
        max_upload_bytes=settings.max_upload_bytes,
        max_request_bytes=settings.max_request_bytes,
        upload_paths=(f"{API_PREFIX}/calibration-sets",),
    )
    app.include_router(health.router)
    install_console(app, API_PREFIX)
    return app
