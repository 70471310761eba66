"""SQLAlchemy models. Status columns are plain strings (validated by ``core.jobs.states``) so adding a state
needs no enum migration on PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class Tenant(Base):
    """An isolation boundary: a tenant's keys see its jobs, sets and artifacts and nothing else."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """A bearer key, stored only as its sha256: the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    tenant: Mapped[Tenant] = relationship()


class CalibrationSet(Base):
    __tablename__ = "calibration_sets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    objective: Mapped[str] = mapped_column(String(32))
    item_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_jobs_status_enqueued", "status", "enqueued_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # Liveness: the worker holding the job refreshes heartbeat_at; ``lease`` changes on every claim so a
    # superseded worker notices it lost the job.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease: Mapped[str | None] = mapped_column(String(40), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # claims, whatever ended the previous one
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # claims after a lost worker
    transient_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    transient_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the run message was last handed to the broker; None: never (the broker was down). The reaper
    # re-sends a queued job whose message is older than GISP_REQUEUE_AFTER_S (claims are idempotent).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    current_sparsity: Mapped[float | None] = mapped_column(Float, nullable=True)
    calibration_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    reached_sparsities: Mapped[list[float] | None] = mapped_column(JSONType, nullable=True)
    phase: Mapped[str | None] = mapped_column(String(32), nullable=True)
    phase_done: Mapped[int | None] = mapped_column(Integer, nullable=True)
    phase_total: Mapped[int | None] = mapped_column(Integer, nullable=True)

    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_field: Mapped[str | None] = mapped_column(String(200), nullable=True)

    checkpoints: Mapped[list[Checkpoint]] = relationship(
        back_populates="job", order_by="Checkpoint.sparsity", cascade="all, delete-orphan"
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class Checkpoint(Base):
    """A pruned model at one sparsity: a target materialised after the run, or one asked for later."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "label", name="uq_checkpoints_job_label"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    sparsity: Mapped[float] = mapped_column(Float)
    # the sparsity, then the variant if any (``core.jobs.states.checkpoint_label``): unique per job
    label: Mapped[str] = mapped_column(String(48))
    variant: Mapped[str] = mapped_column(String(32), default="", server_default="")
    is_target: Mapped[bool] = mapped_column(Boolean, default=False)
    layout: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The materialising worker's token: its writes count only while it holds the claim.
    claim: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    job: Mapped[Job] = relationship(back_populates="checkpoints")
    artifacts: Mapped[list[Artifact]] = relationship(order_by="Artifact.key")


class Artifact(Base):
    """An object written to storage, with the sha256 a download can be checked against."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_job_kind_name", "job_id", "kind", "name"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    checkpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="CASCADE"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(32))  # trajectory | report | checkpoint_file | plot
    key: Mapped[str] = mapped_column(String(1024), unique=True)
    name: Mapped[str] = mapped_column(String(512))  # path inside the checkpoint / report folder
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Verification(Base):
    """A request to re-measure the point ``/select`` chooses for some bounds, and what a worker found.

    Keyed by the job and a digest of what the API asked (the bounds, the candidate points in the order they
    are to be tried, with their curve figures), so asking again answers from this row instead of measuring
    again. The worker writes the outcome under its ``claim``, as an on-demand checkpoint's worker does.
    """

    __tablename__ = "verifications"
    __table_args__ = (UniqueConstraint("job_id", "request_key", name="uq_verifications_job_request"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    request_key: Mapped[str] = mapped_column(String(64))
    # {"bounds": {...}, "dense": POINT, "candidates": [POINT, ...]}: the curve's choice first, then each
    # point the worker steps back to while the re-measured figure misses a bound
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claim: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_field: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
