"""Liveness, readiness and metrics (unauthenticated, outside /v1)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import SettingsDep
from core.db.session import get_engine
from core.settings import Settings
from core.storage import get_storage

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


def _check_database(settings: Settings) -> None:
    with get_engine(settings).connect() as connection:
        connection.execute(text("SELECT 1"))


def _check_broker(settings: Settings) -> None:
    from worker.celery_app import get_celery_app

    with get_celery_app(settings).connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def _check_storage(settings: Settings) -> None:
    get_storage(settings).check()


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """Database, broker and storage all answer; 503 names the ones that do not."""
    checks = {"database": _check_database, "broker": _check_broker, "storage": _check_storage}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check(settings)
            results[name] = "ok"
        except Exception as error:
            results[name] = f"unavailable: {type(error).__name__}"
    ready = all(value == "ok" for value in results.values())
    if ready:
        return JSONResponse({"status": "ready", "checks": results})
    return JSONResponse(
        status_code=503,
        content={
            "error": {"code": "not_ready", "message": "a dependency is unavailable", "field": None},
            "checks": results,
        },
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
