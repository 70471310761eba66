"""What every piece of work on one job needs to know, in one object instead of four arguments."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from core.storage import Storage


@dataclass
class JobContext:
    settings: Settings
    storage: Storage
    tenant_id: str
    job_id: str
    lease: str | None = None  # held while running the job; on-demand checkpoints work without one
