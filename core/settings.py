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

    environment: Environment = "development"

    # Persistence and messaging.
    database_url: str = "sqlite:///./gisp.db"
    database_pool_size: int = Field(10, ge=1, le=200)
    database_max_overflow: int = Field(30, ge=0, le=500)
    broker_url: str = "redis://127.0.0.1:6379/0"
    broker_dir: Path = Field(
        Path("./.gisp-broker"), description="message folder when GISP_BROKER_URL is filesystem:// (embedded)"
    )
    task_queue: str = Field("gpu", min_length=1, description="Celery queue the GPU workers consume")

    # Object storage: an S3-compatible endpoint, or a local folder for the embedded mode.
    storage_backend: Literal["s3", "local"] = "s3"
    storage_dir: Path = Path("./.gisp-storage")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "gisp"
    s3_access_key: SecretStr = SecretStr(DEFAULT_S3_KEY)
    s3_secret_key: SecretStr = SecretStr(DEFAULT_S3_SECRET)
    s3_create_bucket: bool = Field(False, description="create the bucket on first use (dev and tests)")
    multipart_threshold_bytes: int = Field(64 * 1024**2, ge=5 * 1024**2)
    multipart_chunk_bytes: int = Field(64 * 1024**2, ge=5 * 1024**2)

    # Inputs: where models and named calibration sets may be found, and what may be accepted.
    models_dir: Path = Path("./models")
    data_dir: Path | None = Field(
        None, description="named calibration/evaluation sets; unset: the engine's default (shared/datasets)"
    )
    allow_hub_models: bool = False
    allow_remote_code: bool = False
    max_upload_bytes: int = Field(50 * 1024**2, ge=1)
    max_sparsities: int = Field(32, ge=1)

    # Worker behaviour.
    worker_device: str = "cpu"
    worker_dtype: str = "float32"
    worker_batch_size: int = Field(
        8, ge=1, le=1024, description="sequences per forward/backward micro-batch: memory, not results"
    )
    task_soft_time_limit_s: int = Field(6 * 3600, ge=1)
    task_time_limit_s: int = Field(6 * 3600 + 300, ge=1)
    materialize_time_limit_s: int = Field(3600, ge=1)
    max_retries: int = Field(5, ge=0, description="retries of a task after transient storage/db failures")
    max_attempts: int = Field(
        5, ge=1, description="claims of one job (crashes included) before it fails instead of resuming again"
    )
    retry_backoff_s: float = Field(5.0, ge=0.0)
    retry_backoff_max_s: float = Field(300.0, ge=0.0)
    heartbeat_interval_s: float = Field(10.0, gt=0.0)
    stale_after_s: float = Field(120.0, gt=0.0, description="a running job silent this long is re-queued")
    reaper_interval_s: float = Field(30.0, gt=0.0)
    debug_step_delay_s: float = Field(
        0.0, ge=0.0, description="pause after each step; development/test only (crash tests)"
    )

    # API.
    page_size_default: int = Field(50, ge=1)
    page_size_max: int = Field(500, ge=1)

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
