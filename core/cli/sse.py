"""Following a job's Server-Sent Events with httpx streaming, reconnecting with Last-Event-ID.

A dropped connection (network error, server restart, proxy timeout, or the server's own maximum stream
duration) is resumed from the last event received, so a client sees every event once and in order. Only
consecutive failures count against the retry budget; any event received resets it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class SSEMessage:
    id: str | None
    event: str
    data: str


class StreamLost(Exception):
    """The stream could not be resumed within the retry budget."""


def parse_lines(lines: Iterator[str]) -> Iterator[SSEMessage | None]:
    """SSE messages from text lines; ``None`` for each comment line (a heartbeat), so callers can check a clock."""
    event, last_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SSEMessage(last_id, event, "\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            yield None
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                last_id = value


def is_terminal(event: dict[str, Any]) -> bool:
    return event.get("kind") == "state" and (event.get("data") or {}).get("status") in TERMINAL


def follow_events(
    http: httpx.Client,
    job_id: str,
    *,
    after: str | None = None,
    max_retries: int = 8,
    backoff_s: float = 0.5,
    backoff_max_s: float = 10.0,
    read_timeout_s: float = 60.0,
    check: Callable[[httpx.Response], httpx.Response] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any] | None]:
    """Yield the job's events (dicts as /events returns them) until its terminal state; ``None`` on heartbeats.

    ``check`` turns an error answer into an exception (4xx: not retried). Raises StreamLost after
    ``max_retries`` consecutive failed attempts.
    """
    import httpx

    last_id = after
    failures = 0
    last_error = ""
    timeout = httpx.Timeout(10.0, read=read_timeout_s)
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            with http.stream(
                "GET", f"/v1/jobs/{job_id}/events/stream", headers=headers, timeout=timeout
            ) as r:
                if 400 <= r.status_code < 500:
                    r.read()
                    if check is not None:
                        check(r)
                    r.raise_for_status()
                if r.status_code >= 500:
                    raise httpx.HTTPStatusError(
                        f"server answered {r.status_code}", request=r.request, response=r
                    )
                for message in parse_lines(r.iter_lines()):
                    if message is None:
                        yield None
                        continue
                    event = json.loads(message.data)
                    last_id = message.id or str(event["id"])
                    failures = 0
                    yield event
                    if is_terminal(event):
                        return
            # A clean end before the terminal state: the server's maximum stream duration. Resume at once.
            continue
        except (httpx.TransportError, httpx.HTTPStatusError, json.JSONDecodeError) as error:
            if isinstance(error, httpx.HTTPStatusError) and error.response.status_code < 500:
                raise
            failures += 1
            last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if failures > max_retries:
                raise StreamLost(f"lost the event stream after {failures} attempts ({last_error})") from None
            sleep(min(backoff_s * 2 ** (failures - 1), backoff_max_s))
