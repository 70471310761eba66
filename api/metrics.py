"""Prometheus metrics: request counts and latencies per route template, and jobs per status.

With several server processes (``uvicorn --workers N``, ``WEB_CONCURRENCY``) each would keep its own
counters and a scrape would see whichever process answered it. Where ``PROMETHEUS_MULTIPROC_DIR`` names a
folder, prometheus-client's multiprocess mode is used instead: every process writes its values to files
there and the /metrics route sums them. The folder must be empty when the server starts (a tmpfs in the
compose file); it is read by prometheus-client at import, so it must be set in the environment beforehand.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db.models import Job
from core.db.session import session_factory
from core.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The folder shared by the server's processes, or None for one process keeping its own counters."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class JobsByStatus(Collector):
    """Reads job counts at scrape time, so every API replica reports the same, true numbers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("gisp_jobs", "jobs per status", labels=["status"])
        try:
            with session_factory(self.settings)() as session:
                rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        except Exception:
            rows = []
        for status_name, count in rows:
            family.add_metric([status_name], count)
        yield family


def _template(scope: Scope) -> str:
    """The route's template (ids replaced by their parameter names), so label cardinality stays bounded."""
    if scope.get("route") is None:
        return "unmatched"
    path: str = scope["path"]
    for name, value in scope.get("path_params", {}).items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


class RequestMetrics:
    """Pure ASGI middleware (BaseHTTPMiddleware would add a task group and a stream copy to every request)."""

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            template = _template(scope)
            self.latency.labels(scope["method"], template).observe(time.perf_counter() - started)
            self.requests.labels(scope["method"], template, str(status[0])).inc()


def install_metrics(app: FastAPI, settings: Settings) -> CollectorRegistry:
    """Count every request; returns the registry the /metrics route serialises."""
    registry = CollectorRegistry()
    shared = multiprocess_dir()
    if shared is None:
        record_into: CollectorRegistry | None = registry
    else:
        if values.ValueClass is values.MutexValue:
            raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported")
        shared.mkdir(parents=True, exist_ok=True)
        multiprocess.MultiProcessCollector(registry, path=str(shared))
        record_into = None  # values go to this process's files; the collector above sums every process's
    requests = Counter(
        "gisp_http_requests", "HTTP requests", ["method", "route", "status"], registry=record_into
    )
    latency = Histogram(
        "gisp_http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=record_into,
    )
    registry.register(JobsByStatus(settings))  # read from the database at scrape time: never per process
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)
    return registry


@asynccontextmanager
async def metrics_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """On a server process's exit, tell the multiprocess files it is gone (drops its live-gauge values)."""
    yield
    shared = multiprocess_dir()
    if shared is not None:
        multiprocess.mark_process_dead(os.getpid(), str(shared))
