"""A cursor over one job's event rows for live streams: each poll is one short database round trip.

Ids come from a sequence, so on PostgreSQL a row can become visible *after* a row with a higher id (two
writers: the worker's step and an on-demand materialisation's checkpoint event, say). A plain ``id > last``
cursor would skip it for good. The feed therefore re-reads, for a grace period, the ids above the last id it
knows to be settled (every id it delivered more than ``grace_s`` ago) and drops the ones already delivered: a
late row is still delivered once, as long as its transaction committed within the grace period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from core.db.models import Job, JobEvent
from core.db.session import session_factory
from core.jobs.states import JobStatus
from core.settings import Settings

MAX_TRACKED = 2000  # beyond this many ids inside the grace period, older ones are settled early


@dataclass
class Batch:
    events: list[dict[str, Any]]
    terminal: bool  # the job had reached a terminal state before these rows were read
    more: bool  # the page was full: poll again at once


@dataclass
class EventFeed:
    settings: Settings
    job_id: str
    after: int = 0  # the last id the client already has
    grace_s: float = 5.0
    page: int = 500
    _recent: dict[int, float] = field(default_factory=dict)  # id -> when delivered (monotonic)

    def poll(self) -> Batch:
        """New rows in id order; opens and closes its own session (no connection is held between polls)."""
        self._settle(time.monotonic())
        session = session_factory(self.settings)()
        try:
            # Status first: a terminal status read here guarantees its event is visible to the next query.
            status = session.scalar(select(Job.status).where(Job.id == self.job_id))
            query = select(JobEvent).where(JobEvent.job_id == self.job_id, JobEvent.id > self.after)
            if self._recent:
                query = query.where(JobEvent.id.not_in(list(self._recent)))
            rows = list(session.scalars(query.order_by(JobEvent.id).limit(self.page)))
            events: list[dict[str, Any]] = [
                {"id": r.id, "created_at": r.created_at.isoformat(), "kind": r.kind, "data": r.data}
                for r in rows
            ]
        finally:
            session.close()
        now = time.monotonic()
        for event in events:
            self._recent[event["id"]] = now
        terminal = status is None or JobStatus(status).is_terminal
        return Batch(events=events, terminal=terminal, more=len(events) == self.page)

    def _settle(self, now: float) -> None:
        """Move the cursor past ids delivered more than grace_s ago (or past the oldest when too many)."""
        old = [i for i, t in self._recent.items() if now - t >= self.grace_s]
        if len(self._recent) - len(old) > MAX_TRACKED:
            old = sorted(self._recent)[: len(self._recent) - MAX_TRACKED]
        for event_id in old:
            del self._recent[event_id]
        if old:
            # An undelivered id below a row delivered grace_s ago belongs to a transaction that stayed open
            # longer than the grace period: it is given up on. Ids still tracked are excluded by the query.
            self.after = max(self.after, *old)
