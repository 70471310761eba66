"""The service's one configuration object, read from ``GISP_*`` environment variables.

Everything a process of the service (API, worker, scheduler, embedded launcher) needs to know about its
surroundings lives here, so a deployment is described by its environment alone. Defaults suit a developer's
machine; :meth:`Settings._refuse_unsafe_defaults` rejects the ones that would be dangerous elsewhere.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_S3_KEY = "gisp-dev"
DEFAULT_S3_SECRET = "gisp-dev-secret"

Environment = Literal["development", "test", "production"]


class Settings(BaseSettings):
    """Configuration of every service process; one instance per process (see :func:`get_settings`)."""

    model_config = SettingsConfigDict(env_prefix="GISP_", extra="ignore", case_sensitive=False)

    environment: Environment = Field(
        "development", description="`production` refuses SQLite, local storage, default S3 keys, remote code"
    )

    # Persistence and messaging.
    database_url: str = Field(
        "sqlite:///.gisp/gisp.db",
        description="SQLAlchemy URL (`postgresql+psycopg://…` in production); the default is the embedded state's",
    )
    database_pool_size: int = Field(10, ge=1, le=200, description="connections kept per process")
    database_max_overflow: int = Field(30, ge=0, le=500, description="extra connections under load")
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker")
    broker_dir: Path = Field(
        Path(".gisp/broker"), description="message folder when GISP_BROKER_URL is filesystem:// (embedded)"
    )
    task_queue: str = Field("gpu", min_length=1, description="Celery queue the GPU workers consume")

    # Object storage: an S3-compatible endpoint, or a local folder for the embedded mode.
    storage_backend: Literal["s3", "local"] = Field(
        "s3", description="`s3`, or `local` (a folder: embedded mode)"
    )
    storage_dir: Path = Field(Path(".gisp/storage"), description="the object store's folder when local")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); unset: AWS")
    s3_public_endpoint_url: str | None = Field(
        None,
        description="the endpoint as clients reach it, used only in the presigned URLs handed to them "
        "(e.g. `https://s3.example.com`); unset: GISP_S3_ENDPOINT_URL",
    )
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_bucket: str = Field("gisp", description="one bucket, a prefix per tenant")
    s3_access_key: SecretStr = Field(
        SecretStr(DEFAULT_S3_KEY), description="S3 access key (a development default)"
    )
    s3_secret_key: SecretStr = Field(
        SecretStr(DEFAULT_S3_SECRET), description="S3 secret key (a development default)"
    )
    s3_create_bucket: bool = Field(False, description="create the bucket on first use (dev and tests)")
    s3_timeout_s: float = Field(
        60.0,
        gt=0.0,
        le=3600.0,
        description="a storage call that gets no answer this long fails (and is retried)",
    )
    multipart_threshold_bytes: int = Field(
        64 * 1024**2, ge=5 * 1024**2, description="uploads above this go multipart"
    )
    multipart_chunk_bytes: int = Field(
        64 * 1024**2, ge=5 * 1024**2, description="size of each multipart part"
    )

    # Inputs: where models and named calibration sets may be found, and what may be accepted.
    models_dir: Path = Field(
        Path("./models"), description="the operator's models: jobs name them `local/<name>`"
    )
    data_dir: Path | None = Field(
        None, description="named calibration/evaluation sets; unset: the engine's default (shared/datasets)"
    )
    allow_hub_models: bool = Field(False, description="operator override: accept hub ids `org/name`")
    allow_remote_code: bool = Field(False, description="operator override: run a model repository's code")
    max_upload_bytes: int = Field(50 * 1024**2, ge=1, description="largest calibration upload")
    max_sparsities: int = Field(32, ge=1, description="most target sparsities per job")

    # Worker behaviour.
    worker_device: str = Field("cpu", description="e.g. `cuda`, `cuda:1`")
    worker_dtype: str = Field("float32", description="e.g. `bfloat16` on GPUs")
    worker_batch_size: int = Field(
        8, ge=1, le=1024, description="sequences per forward/backward micro-batch: memory, not results"
    )
    task_soft_time_limit_s: int = Field(
        6 * 3600, ge=1, description="a job past this fails with time_limit_exceeded"
    )
    task_time_limit_s: int = Field(6 * 3600 + 300, ge=1, description="Celery kills the task past this")
    materialize_time_limit_s: int = Field(3600, ge=1, description="time limit of an on-demand checkpoint")
    max_crashes: int = Field(
        4, ge=0, description="times a job's worker may die (killed, out of memory) before the job fails"
    )
    transient_deadline_s: float = Field(
        3600.0,
        gt=0.0,
        description="how long a job or checkpoint waits out a storage, database or broker outage before failing",
    )
    requeue_after_s: float = Field(
        300.0,
        gt=0.0,
        description="a queued job or pending checkpoint whose message is older than this is sent again",
    )
    retry_backoff_s: float = Field(5.0, ge=0.0, description="first retry delay, doubled each time")
    retry_backoff_max_s: float = Field(300.0, ge=0.0, description="longest retry delay")
    heartbeat_interval_s: float = Field(
        10.0, gt=0.0, description="how often a running job proves its worker alive"
    )
    stale_after_s: float = Field(120.0, gt=0.0, description="a running job silent this long is re-queued")
    reaper_interval_s: float = Field(30.0, gt=0.0, description="how often stale jobs are looked for")
    debug_step_delay_s: float = Field(
        0.0,
        ge=0.0,
        description="pause before each step's work; tests only (they pause or kill workers there)",
    )

    # API.
    page_size_default: int = Field(50, ge=1, description="items per page when a list asks for no limit")
    page_size_max: int = Field(500, ge=1, description="largest page a list returns")
    sse_poll_interval_s: float = Field(0.5, gt=0.0, description="how often an event stream reads new rows")
    sse_heartbeat_s: float = Field(15.0, gt=0.0, description="a comment line after this long without events")
    sse_max_duration_s: float = Field(
        900.0, gt=0.0, description="an event stream closes after this long; clients resume with Last-Event-ID"
    )

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            raise ValueError("task_time_limit_s must exceed task_soft_time_limit_s")
        if self.stale_after_s <= 2 * self.heartbeat_interval_s:
            raise ValueError("stale_after_s must be more than twice heartbeat_interval_s")
        if self.environment == "production":
            problems = []
            if self.database_url.startswith("sqlite"):
                problems.append("GISP_DATABASE_URL must name a server database, not SQLite")
            if self.storage_backend == "s3" and (
                self.s3_access_key.get_secret_value() == DEFAULT_S3_KEY
                or self.s3_secret_key.get_secret_value() == DEFAULT_S3_SECRET
            ):
                problems.append("GISP_S3_ACCESS_KEY/GISP_S3_SECRET_KEY still hold the development defaults")
            if self.broker_url.startswith("filesystem"):
                problems.append("the filesystem broker is for the embedded mode only")
            if self.storage_backend == "local":
                problems.append("GISP_STORAGE_BACKEND=local is for the embedded mode only")
            if self.s3_create_bucket:
                problems.append("GISP_S3_CREATE_BUCKET is for development; provision the bucket instead")
            if self.debug_step_delay_s:
                problems.append("GISP_DEBUG_STEP_DELAY_S is for tests only")
            if self.allow_remote_code:
                problems.append("GISP_ALLOW_REMOTE_CODE would run code from submitted models")
            if problems:
                raise ValueError("unsafe settings for production: " + "; ".join(problems))
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
