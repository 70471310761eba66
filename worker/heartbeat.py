"""A thread that keeps a claimed job's ``heartbeat_at`` fresh while the task runs.

It runs beside the pruning loop (which may spend minutes in one step on a large model), so liveness does not
depend on step length; the reaper re-queues a job only when this thread, i.e. the process, is gone.
"""

from __future__ import annotations

import logging
import threading

from core.db.session import session_scope
from core.jobs import crud
from core.settings import Settings

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, settings: Settings, job_id: str, lease: str) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.settings = settings
        self.job_id = job_id
        self.lease = lease
        self.lost = False  # the lease went to another worker: stop at the next step boundary
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.settings.heartbeat_interval_s):
            try:
                with session_scope(self.settings) as session:
                    alive = crud.heartbeat(session=session, job_id=self.job_id, lease=self.lease)
            except Exception:  # a database blip: keep beating, the reaper tolerates a few misses
                logger.warning("heartbeat of %s failed; retrying", self.job_id, exc_info=True)
                continue
            if not alive:
                self.lost = True
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
