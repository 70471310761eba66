"""Live job events as Server-Sent Events: one SSE event per event row, resumable with Last-Event-ID.

The handler runs on the event loop; each poll of the database is one short round trip in the thread pool
(:class:`core.jobs.event_feed.EventFeed`), so a stream holds neither a thread nor a database connection
while it waits. A stream ends after it delivers a terminal state, or after ``GISP_SSE_MAX_DURATION_S``
(the client then reconnects with Last-Event-ID, like any SSE client after a dropped connection).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import BearerDep, SettingsDep, tenant_of
from api.errors import not_found
from api.params import JobId, event_id
from api.routes.jobs import ERRORS
from core.db.session import session_factory
from core.jobs import crud
from core.jobs.event_feed import EventFeed
from core.settings import Settings

router = APIRouter(prefix="/jobs", tags=["jobs"])

RETRY_MS = 2000  # what EventSource clients wait before reconnecting
KEEP_ALIVE = b": keep-alive\n\n"


def format_event(event: dict[str, Any]) -> bytes:
    """One SSE event: ``id`` (the row id), ``event`` (its kind), ``data`` (the row as /events returns it)."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event['id']}\nevent: {event['kind']}\ndata: {data}\n\n".encode()


def _resume_id(header: str | None, query: str | None) -> int:
    # The header wins: an EventSource reconnecting sends its newest id there, while the query parameter is
    # whatever the page first asked for.
    for value, field in ((header, "Last-Event-ID"), (query, "last_event_id")):
        if value is not None and value != "":
            return event_id(value, field=field)
    return 0


def _authorise(settings: Settings, credentials: Any, job_id: str) -> None:
    """401 / 404 before the stream starts, in a session closed at once (the stream keeps none open)."""
    session = session_factory(settings)()
    try:
        tenant = tenant_of(session, credentials)
        if crud.get_job(session=session, tenant_id=tenant.id, job_id=job_id) is None:
            raise not_found("job")
    finally:
        session.close()


async def event_stream(feed: EventFeed, settings: Settings) -> AsyncIterator[bytes]:
    started = last_write = time.monotonic()
    yield f"retry: {RETRY_MS}\n\n".encode()
    while True:
        batch = await run_in_threadpool(feed.poll)
        for event in batch.events:
            yield format_event(event)
        now = time.monotonic()
        if batch.events:
            last_write = now
        if batch.more:
            continue
        if batch.terminal or now - started >= settings.sse_max_duration_s:
            return
        if now - last_write >= settings.sse_heartbeat_s:
            yield KEEP_ALIVE
            last_write = now
        await asyncio.sleep(settings.sse_poll_interval_s)


@router.get(
    "/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {
            "content": {"text/event-stream": {}},
            "description": "SSE: `id` = event id, `event` = kind, `data` = the event as JSON; "
            "closes after the terminal state",
        },
    },
)
async def stream_events(
    job_id: JobId,
    settings: SettingsDep,
    credentials: BearerDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    last_event_id: Annotated[
        str | None, Query(max_length=32, description="for clients that cannot set Last-Event-ID")
    ] = None,
) -> StreamingResponse:
    """Follow a job's events live; resume after the id in ``Last-Event-ID`` (or ``last_event_id``)."""
    after = _resume_id(last_event_id_header, last_event_id)
    await run_in_threadpool(_authorise, settings, credentials, job_id)
    feed = EventFeed(settings=settings, job_id=job_id, after=after)
    return StreamingResponse(
        event_stream(feed, settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
