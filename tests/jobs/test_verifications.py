"""Rows of re-measured selections on the real PostgreSQL: one per question, claimed once, fenced, re-sent."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.jobs.states import VerificationStatus

pytestmark = pytest.mark.services

REQUEST = {
    "bounds": {"max_perplexity": 30.0},
    "rule": "the most pruned point with perplexity ≤ 30",
    "dense": {"sparsity": 0.0, "label": "dense", "parameters": 1000, "perplexity": 10.0},
    "candidates": [{"sparsity": 0.3, "label": "0.3000", "parameters": 700, "perplexity": 21.0}],
}


@pytest.fixture
def job_id(client_factory, tiny_model: str) -> str:  # type: ignore[no-untyped-def]
    client = client_factory("verification-rows")
    body = {"model": tiny_model, "calibration": {"name": "wikitext2"}, "sparsities": [0.3], "steps": 2}
    return client.post("/v1/jobs", json=body).json()["id"]


def test_one_row_per_question_claimed_once_and_fenced(service_settings, job_id: str) -> None:
    from core.db.models import Verification
    from core.db.session import session_scope
    from core.jobs import verifications as rows

    with session_scope(service_settings) as session:
        row, created = rows.ensure_verification(session=session, job_id=job_id, request=REQUEST)
        again, created_again = rows.ensure_verification(session=session, job_id=job_id, request=dict(REQUEST))
        other, _ = rows.ensure_verification(
            session=session, job_id=job_id, request={**REQUEST, "bounds": {"max_perplexity": 31.0}}
        )
        assert created and not created_again and again.id == row.id and other.id != row.id
        first = rows.claim_verification(session=session, verification_id=row.id, stale_after_s=3600)
        assert first is not None
        assert rows.claim_verification(session=session, verification_id=row.id, stale_after_s=3600) is None
    with session_scope(service_settings) as session:
        # the worker's time limit passed: another worker takes the row over; the first one's write is refused
        session.get(Verification, row.id).claimed_at -= timedelta(hours=2)  # type: ignore[union-attr]
    with session_scope(service_settings) as session:
        second = rows.claim_verification(session=session, verification_id=row.id, stale_after_s=3600)
        assert second not in (None, first)
        stale = rows.finish_verification(
            session=session,
            verification_id=row.id,
            claim=first,
            status=VerificationStatus.ready,
            result={"verified": "0.3000"},
        )
        assert not stale
        done = rows.finish_verification(
            session=session,
            verification_id=row.id,
            claim=second,  # type: ignore[arg-type]
            status=VerificationStatus.failed,
            error=("no_point_verified", "nothing held", "max_perplexity"),
        )
        assert done
    with session_scope(service_settings) as session:
        stored = session.get(Verification, row.id)
        assert stored is not None and stored.status == "failed" and stored.claim is None
        assert (stored.error_code, stored.error_field) == ("no_point_verified", "max_perplexity")
        rows.finish_verification(  # nobody holds it now: a late write changes nothing
            session=session, verification_id=row.id, claim=second or "", status=VerificationStatus.ready
        )
    with session_scope(service_settings) as session:
        assert session.get(Verification, row.id).status == "failed"  # type: ignore[union-attr]
        _settle(session, other.id)


def test_the_reaper_sends_again_what_waits_and_what_a_dead_worker_left(service_settings, job_id: str) -> None:
    from core.db.models import Verification
    from core.db.session import session_scope
    from core.jobs import verifications as rows

    with session_scope(service_settings) as session:
        waiting, _ = rows.ensure_verification(session=session, job_id=job_id, request=REQUEST)
        abandoned, _ = rows.ensure_verification(
            session=session, job_id=job_id, request={**REQUEST, "bounds": {"max_perplexity": 29.0}}
        )
        rows.mark_enqueued(session=session, verification_id=abandoned.id)
        assert rows.claim_verification(session=session, verification_id=abandoned.id, stale_after_s=60)
    with session_scope(service_settings) as session:
        due = rows.to_send(session=session, older_than_s=3600, stale_claim_s=3600)
        assert waiting.id in due and abandoned.id not in due  # never sent; claimed a moment ago
        rows.mark_enqueued(session=session, verification_id=waiting.id)
    with session_scope(service_settings) as session:
        due = rows.to_send(session=session, older_than_s=3600, stale_claim_s=3600)
        assert waiting.id not in due  # its message left just now
        session.get(Verification, abandoned.id).claimed_at -= timedelta(hours=2)  # type: ignore[union-attr]
    with session_scope(service_settings) as session:
        due = rows.to_send(session=session, older_than_s=3600, stale_claim_s=3600)
        assert abandoned.id in due and waiting.id not in due
        for row_id in (waiting.id, abandoned.id):
            _settle(session, row_id)


def _settle(session, row_id: str) -> None:  # type: ignore[no-untyped-def]
    """Leave no waiting row behind: a later test's reaper would send it to its worker."""
    from core.db.models import Verification

    row = session.get(Verification, row_id)
    row.status, row.claim = "failed", None
