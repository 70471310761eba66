"""How a job attempt fails: transient trouble releases it for a retry, user errors fail it at once, and a
stale worker's job is re-queued by the reaper (no worker process needed: the attempt runs in-process)."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = pytest.mark.services


class BrokenStorage:
    """Object storage that is down: every call fails as the real client does when its endpoint is."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        from core.storage import StorageError

        def unreachable(*_args: object, **_kwargs: object) -> None:
            raise StorageError("storage unreachable")

        return unreachable


def _queued_job(service_settings, tenant: str, model: str) -> str:  # type: ignore[no-untyped-def]
    from core.db.session import session_scope
    from core.jobs import crud
    from core.jobs.tenants import get_or_create_tenant
    from core.schemas.jobs import JobSpec

    spec = JobSpec.model_validate({"model": model, "calibration": {"name": "wikitext2"}, "sparsities": [0.2]})
    with session_scope(service_settings) as session:
        tenant_id = get_or_create_tenant(session=session, name=tenant).id
        job, _ = crud.create_job(session=session, tenant_id=tenant_id, job_in=spec, idempotency_key=None)
        return job.id


def _job(service_settings, job_id: str):  # type: ignore[no-untyped-def]
    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope(service_settings) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def test_transient_storage_failure_releases_the_job(
    service_settings, tiny_model: str, named_sets: None, monkeypatch
) -> None:
    from worker import job_runner

    job_id = _queued_job(service_settings, "transient", tiny_model)
    monkeypatch.setattr(job_runner, "get_storage", lambda settings: BrokenStorage())
    with pytest.raises(job_runner.TransientFailure):
        job_runner.JobRun(service_settings, job_id, "test-worker").execute()
    job = _job(service_settings, job_id)
    assert job.status == "queued"  # claimable again by the retry
    assert job.lease is None and job.attempt == 1
    assert (job.crashes, job.transient_retries) == (0, 1)  # an outage is not a crash
    assert job.transient_since is not None


def test_user_error_fails_with_its_code(service_settings, monkeypatch) -> None:
    from worker import job_runner

    job_id = _queued_job(service_settings, "user-error-inproc", "local/not-on-this-worker")
    outcome = job_runner.JobRun(service_settings, job_id, "test-worker").execute()
    assert outcome.status == "failed"
    job = _job(service_settings, job_id)
    assert (job.status, job.error_code, job.error_field) == ("failed", "unknown_model", "model.id")


def test_claims_are_exclusive_and_the_reaper_requeues_stale_jobs(service_settings, tiny_model: str) -> None:
    from sqlalchemy import update

    from core.db.base import utcnow
    from core.db.models import Job
    from core.db.session import session_scope
    from core.jobs import crud

    job_id = _queued_job(service_settings, "reaped", tiny_model)
    with session_scope(service_settings) as session:
        lease = crud.claim_job(session=session, job_id=job_id, worker_id="a", stale_after_s=60)
    assert lease
    with session_scope(service_settings) as session:
        assert crud.claim_job(session=session, job_id=job_id, worker_id="b", stale_after_s=60) is None
        assert crud.reap_stale_jobs(session=session, stale_after_s=60) == []
    with session_scope(service_settings) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )
    with session_scope(service_settings) as session:
        assert job_id in crud.reap_stale_jobs(session=session, stale_after_s=60)
    with session_scope(service_settings) as session:
        # The old worker's lease is gone: its writes are refused from now on.
        assert not crud.heartbeat(session=session, job_id=job_id, lease=lease)
        new_lease = crud.claim_job(session=session, job_id=job_id, worker_id="b", stale_after_s=60)
    assert new_lease and new_lease != lease
    job = _job(service_settings, job_id)
    assert (job.attempt, job.crashes) == (2, 1)


def test_a_job_that_keeps_killing_its_worker_fails(service_settings, tiny_model: str) -> None:
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.session import session_scope
    from worker import job_runner

    job_id = _queued_job(service_settings, "crash-loop", tiny_model)
    with session_scope(service_settings) as session:
        session.execute(update(Job).where(Job.id == job_id).values(crashes=service_settings.max_crashes + 1))
    outcome = job_runner.JobRun(service_settings, job_id, "test-worker").execute()
    assert outcome.status == "failed"
    assert _job(service_settings, job_id).error_code == "worker_lost_repeatedly"


def test_maintenance_worker_needs_no_torch() -> None:
    """The reaper's worker runs from the API image, which has no torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'matplotlib'): sys.modules[name] = None\n"
        "import worker.tasks\n"
        "from worker import engine_runner\n"
        "engine_runner.preload()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
