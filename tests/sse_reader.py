"""A plain reading of a text/event-stream for tests (per the WHATWG rules), independent of the CLI's reader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    id: str | None
    event: str
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    messages: list[Message] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None


def messages(response: httpx.Response, record: Stream) -> Iterator[Message]:
    """Yield each complete message as it arrives; comments and retry fields are recorded on ``record``."""
    event, data, last_id = "message", [], None
    for line in response.iter_lines():
        if line == "":
            if data:
                message = Message(last_id, event, "\n".join(data))
                record.messages.append(message)
                yield message
            event, data = "message", []
        elif line.startswith(":"):
            record.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                last_id = value
            elif name == "retry" and value.isdigit():
                record.retry = int(value)
