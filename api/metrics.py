"""Prometheus metrics: request counts and latencies per route template, and jobs per status."""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db.models import Job
from core.db.session import session_factory
from core.settings import Settings


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
    registry = CollectorRegistry()
    requests = Counter(
        "gisp_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "gisp_http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=registry,
    )
    registry.register(JobsByStatus(settings))
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)
    return registry
