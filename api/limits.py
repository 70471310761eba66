"""Request bodies are limited while they stream in: 413 as soon as the limit is crossed, not after reading it all.

A declared Content-Length over the limit is refused before a byte of the body is read. A body without one
(``Transfer-Encoding: chunked``) is counted as it arrives: the moment it crosses the limit the 413 is sent, and
the application, still reading, is told the client went away, so neither the multipart parser's spool nor
the JSON parser ever holds more than the limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Multipart framing and form fields around the file itself.
ENVELOPE_BYTES = 64 * 1024


class BodySizeLimit:
    """A pure ASGI middleware (no thread hop, no body buffering); the upload route re-checks the file's size.

    ``upload_paths`` take ``max_upload_bytes`` plus the multipart envelope; every other body takes
    ``max_request_bytes``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_upload_bytes: int,
        max_request_bytes: int,
        upload_paths: tuple[str, ...],
    ) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_request_bytes = max_request_bytes
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["path"] in self.upload_paths
        limit = self.max_upload_bytes + ENVELOPE_BYTES if upload else self.max_request_bytes
        refusal = _refusal(self.max_upload_bytes if upload else limit, "file" if upload else "body")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_json(send, 413, refusal)
                return
        received = 0
        started = False  # the application began its response: a 413 can no longer be sent
        refused = False  # the 413 went out: whatever the application sends next is dropped

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _send_json(send, 413, refusal)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:  # the application failing on the cut-off body is expected; anything else is not
                raise


def _refusal(max_bytes: int, field: str) -> bytes:
    what = "the upload" if field == "file" else "the request body"
    return json.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "message": f"{what} exceeds {max_bytes} bytes",
                "field": field,
            }
        }
    ).encode()


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the rest of the body is never read: the connection cannot be reused
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
