"""One failure policy for every task that works on a job (the run and the on-demand checkpoints).

* ``UserInputError`` (unsupported model, bad calibration...): fail at once, showing the error's code and field.
* Storage, database or broker trouble (:data:`TRANSIENT_ERRORS`): retry with backoff; the work resumes from
  what was stored (the trajectory's last step, the checkpoints already ready).
* The lease lost to another worker (this one was presumed dead): stop quietly, touching nothing.
* The task's time limit: fail with ``time_limit_exceeded``.
* Anything else is a bug: fail with ``internal_error``, naming the exception type only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from core.errors import UserInputError
from core.jobs.crud import LeaseLost
from core.storage import StorageError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StorageError,
    OperationalError,
    InterfaceError,
    DisconnectionError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class Failure:
    action: Literal["fail", "retry", "stop"]
    code: str = ""
    message: str = ""
    field: str | None = None


def classify(error: BaseException) -> Failure:
    if isinstance(error, LeaseLost):
        return Failure("stop")
    if isinstance(error, UserInputError):
        return Failure("fail", error.code, error.message, error.field)
    if isinstance(error, SoftTimeLimitExceeded):
        return Failure("fail", "time_limit_exceeded", "the work ran past the worker's time limit")
    if isinstance(error, TRANSIENT_ERRORS):
        return Failure("retry", _outage_code(error), f"{type(error).__name__}: {error}")
    return Failure("fail", "internal_error", f"the worker failed ({type(error).__name__})")


def _outage_code(error: BaseException) -> str:
    """What was unavailable, as the code a job fails with once its outage outlasts the deadline."""
    if isinstance(error, StorageError):
        return "storage_unavailable"
    if isinstance(error, OperationalError | InterfaceError | DisconnectionError):
        return "database_unavailable"
    return "service_unavailable"
