"""Path and query parameters checked by shape before they reach the database.

PostgreSQL refuses NUL in text and overflows past bigint; Python's ``str.isdigit`` accepts digits no database
reads ('²', '１'). A parameter that cannot be an id this server issued is therefore a 422 naming it, decided
here by its shape; a well-formed id that names nothing stays a 404.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path

from api.errors import APIError

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""Every public id (``job_…``, ``cal_…``) is a prefix and hex digits; this admits those and nothing exotic."""

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="a job id, as POST /v1/jobs returned it")]
SetId = Annotated[
    str,
    Path(pattern=ID_PATTERN, description="a calibration set id, as POST /v1/calibration-sets returned it"),
]

BIGINT_MAX = 2**63 - 1
_EVENT_ID_RE = re.compile(r"[0-9]{1,19}")


def event_id(value: str, *, field: str) -> int:
    """An event id from a cursor or Last-Event-ID: ASCII digits within PostgreSQL's bigint, else a 422."""
    if not _EVENT_ID_RE.fullmatch(value) or int(value) > BIGINT_MAX:
        raise APIError(422, "validation_error", "must be an event id (ASCII digits, a bigint)", field=field)
    return int(value)
