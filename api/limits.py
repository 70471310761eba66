"""Refuse oversized uploads from their Content-Length, before the multipart parser spools them to disk."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

# Multipart framing and form fields around the file itself.
ENVELOPE_BYTES = 64 * 1024


class UploadSizeLimit:
    """A pure ASGI middleware (no thread hop, no body buffering); the route re-checks the file's own size."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: tuple[str, ...]) -> None:
        self.app = app
        self.limit = max_bytes + ENVELOPE_BYTES
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    await self._refuse(send)
                    return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"the upload exceeds {self.max_bytes} bytes",
                    "field": "file",
                }
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
