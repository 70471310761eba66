"""Rows of re-measured selections (``GET /v1/jobs/{id}/select?verify=true``): create, claim, finish, re-send.

The API stores what is to be measured (the bounds, the candidate points in order, the dense figures the
accuracy ratio refers to); a worker claims the row with one conditional UPDATE, measures, and writes the
outcome with another that holds only while its claim does, so a worker presumed dead and replaced never
overwrites its successor's answer. Waiting rows are sent again by the reaper (``worker.outbox``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.base import new_id, utcnow
from core.db.models import Verification
from core.jobs.fencing import claim_row
from core.jobs.states import VerificationStatus


def request_key(request: dict[str, Any]) -> str:
    """A digest of the request's canonical JSON: the same bounds on the same curve find the same row."""
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def ensure_verification(
    *, session: Session, job_id: str, request: dict[str, Any]
) -> tuple[Verification, bool]:
    """The row of this request, created pending if new (created=True); concurrent creators share one."""
    key = request_key(request)
    query = select(Verification).where(Verification.job_id == job_id, Verification.request_key == key)
    existing = session.scalar(query)
    if existing is not None:
        return existing, False
    row = Verification(
        id=new_id("ver"),
        job_id=job_id,
        request_key=key,
        request=request,
        status=VerificationStatus.pending.value,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.scalar(query)
        if existing is None:
            raise
        return existing, False
    return row, True


def claim_verification(
    *, session: Session, verification_id: str, stale_after_s: float, reclaim: str | None = None
) -> str | None:
    """Take a pending row, or one whose measuring outlived its time limit (:func:`claim_row`)."""
    return claim_row(
        session=session,
        model=Verification,
        row_id=verification_id,
        pending=VerificationStatus.pending.value,
        busy=VerificationStatus.measuring.value,
        stale_after_s=stale_after_s,
        reclaim=reclaim,
    )


def finish_verification(
    *,
    session: Session,
    verification_id: str,
    claim: str,
    status: VerificationStatus,
    result: dict[str, Any] | None = None,
    error: tuple[str, str, str | None] | None = None,
) -> bool:
    """Write the outcome (``ready`` or ``failed``) if ``claim`` still holds the row; False if it does not."""
    code, message, field = error or (None, None, None)
    written = session.execute(
        update(Verification)
        .where(
            Verification.id == verification_id,
            Verification.claim == claim,
            Verification.status == VerificationStatus.measuring.value,
        )
        .values(
            status=status.value,
            result=result,
            error_code=code,
            error_message=message,
            error_field=field,
            claim=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return getattr(written, "rowcount", 0) == 1


def mark_enqueued(*, session: Session, verification_id: str) -> None:
    session.execute(
        update(Verification).where(Verification.id == verification_id).values(enqueued_at=utcnow())
    )


def to_send(*, session: Session, older_than_s: float, stale_claim_s: float) -> list[str]:
    """Ids of rows whose message may be lost (pending, never or long ago sent) or whose worker died."""
    now = utcnow()
    waiting = and_(
        Verification.status == VerificationStatus.pending.value,
        or_(
            Verification.enqueued_at.is_(None),
            Verification.enqueued_at < now - timedelta(seconds=older_than_s),
        ),
    )
    abandoned = and_(
        Verification.status == VerificationStatus.measuring.value,
        Verification.claimed_at < now - timedelta(seconds=stale_claim_s),
    )
    query = select(Verification.id).where(or_(waiting, abandoned)).order_by(Verification.created_at)
    return list(session.scalars(query.limit(500)))
