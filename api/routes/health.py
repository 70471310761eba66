"""Liveness, readiness and metrics (outside /v1; /metrics takes a token of its own when one is set)."""

from __future__ import annotations

import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import SettingsDep
from api.errors import APIError
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


READY_TIMEOUT_S = 2.0
_CHECKS = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """Database, broker and storage all answer within 2 s (checked at once); 503 names the ones that do not.

    A dependency that hangs (an S3 endpoint that accepts connections and never answers) costs the probe
    its timeout, not the probe's caller theirs.
    """
    checks = {"database": _check_database, "broker": _check_broker, "storage": _check_storage}
    futures = {name: _CHECKS.submit(check, settings) for name, check in checks.items()}
    deadline = time.monotonic() + READY_TIMEOUT_S
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            results[name] = "ok"
        except FuturesTimeout:
            results[name] = f"unavailable: no answer within {READY_TIMEOUT_S:g} s"
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
        headers={"Retry-After": "5"},
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Aggregate Prometheus metrics: requests per route template and jobs per status, no tenant or job label.

    With GISP_METRICS_TOKEN set, a scrape must send it as a bearer token (401 otherwise).
    """
    if settings.metrics_token is not None and not _bearer_matches(
        request.headers.get("authorization", ""), settings.metrics_token.get_secret_value()
    ):
        raise APIError(
            401,
            "unauthorized",
            "/metrics needs the bearer token GISP_METRICS_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
