"""Prometheus metrics: request counts and latencies per route template, and jobs per status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

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


def _template(request: Request) -> str:
    """The route's template (ids replaced by their parameter names), so label cardinality stays bounded."""
    if request.scope.get("route") is None:
        return "unmatched"
    path = request.url.path
    for name, value in request.path_params.items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


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

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        template = _template(request)
        latency.labels(request.method, template).observe(time.perf_counter() - started)
        requests.labels(request.method, template, str(response.status_code)).inc()
        return response

    return registry
