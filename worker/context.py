"""What every piece of work on one job needs to know, in one object instead of four arguments."""

from __future__ import annotations

from dataclasses import dataclass

from core.jobs.fencing import Fence
from core.settings import Settings
from core.storage import Storage


@dataclass
class JobContext:
    settings: Settings
    storage: Storage
    tenant_id: str
    job_id: str
    lease: str | None = None  # held while running the job
    claim: str | None = None  # held while materialising an on-demand checkpoint

    @property
    def fence(self) -> Fence:
        """What every write of this work must still hold (see ``core.jobs.fencing``)."""
        return Fence(self.job_id, lease=self.lease, claim=self.claim)
