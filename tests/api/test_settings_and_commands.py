"""Settings refuse unsafe production defaults; ``gisp keys`` and ``gisp db`` work against a real database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_development_defaults_load() -> None:
    settings = Settings(_env_file=None)
    assert settings.environment == "development"
    assert settings.task_queue == "gpu"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({}, "GISP_DATABASE_URL"),
        ({"database_url": "postgresql+psycopg://db/gisp"}, "GISP_S3_ACCESS_KEY"),
        (
            {
                "database_url": "postgresql+psycopg://db/gisp",
                "s3_access_key": "k",
                "s3_secret_key": "s",
                "allow_remote_code": True,
            },
            "GISP_ALLOW_REMOTE_CODE",
        ),
        (
            {
                "database_url": "postgresql+psycopg://db/gisp",
                "s3_access_key": "k",
                "s3_secret_key": "s",
                "broker_url": "filesystem://",
            },
            "filesystem broker",
        ),
    ],
)
def test_production_refuses_unsafe_defaults(overrides: dict, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(environment="production", **overrides)


def test_production_accepts_explicit_configuration() -> None:
    settings = Settings(
        environment="production",
        database_url="postgresql+psycopg://db/gisp",
        s3_access_key="key",
        s3_secret_key="secret",
    )
    assert settings.s3_secret_key.get_secret_value() == "secret"


def test_time_limits_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="task_time_limit_s"):
        Settings(task_soft_time_limit_s=100, task_time_limit_s=50)


@pytest.mark.services
def test_keys_create_and_revoke_commands(client_factory, service_env: dict[str, str], app) -> None:
    from fastapi.testclient import TestClient

    env = {"PATH": "/usr/bin:/bin", **service_env}

    def gisp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core.cli.main", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = gisp("keys", "create", "--tenant", "cli-tenant")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("gisp_")
    client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
    assert client.get("/v1/jobs").status_code == 200
    assert gisp("keys", "revoke", key).returncode == 0
    assert client.get("/v1/jobs").status_code == 401
    assert gisp("keys", "revoke", key).returncode == 1
    assert gisp("db", "upgrade").returncode == 0
