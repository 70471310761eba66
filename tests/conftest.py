"""Service fixtures: a fresh PostgreSQL database, moto_server as S3, a tiny local model, API clients.

Everything here is session-scoped and lazy: tests of other packages that do not ask for these fixtures pay
nothing. The services are real (PostgreSQL and Redis on loopback, moto_server in a subprocess); a missing
service is an error, not a skip, so a broken CI environment cannot pass silently.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "GISP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("GISP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pruning removes attention heads and MLP channels from a trained language model.",
    "A small model answers quickly; a large model answers well.",
    "Calibration text drives the gradients that score every structure.",
] * 4


def wait_until(
    condition: Callable[[], object], timeout: float, interval: float = 0.05, what: str = ""
) -> object:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # the service may not be up yet
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}: {last_error}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- PostgreSQL ---


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this test session, migrated to head, dropped at the end."""
    from sqlalchemy import create_engine, text

    from core.db.migrate import upgrade
    from core.db.session import dispose_engines

    name = f"gisp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def fresh_database() -> Iterator[Callable[[], str]]:
    """A factory of empty databases (for migration tests), all dropped at the end."""
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def make() -> str:
        name = f"gisp_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with admin.connect() as connection:
        for name in names:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# --- S3 (moto_server) ---


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    process = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url, timeout=1).status_code < 500, timeout=30, what="moto_server")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


# --- a tiny model and calibration text ---


def build_tiny_model(directory: Path, *, layers: int = 4, seed: int = 0) -> Path:
    """A random Llama (hidden 64, 4 heads, 2 KV heads) with a BPE tokenizer trained here, saved offline."""
    from tests.utils.tiny import save_tiny_model

    return save_tiny_model(directory, layers=layers, seed=seed)


@pytest.fixture(scope="session")
def service_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service")
    dirs = {"models": root / "models", "data": root / "data"}
    for path in dirs.values():
        path.mkdir()
    return dirs


@pytest.fixture(scope="session")
def tiny_model(service_dirs: dict[str, Path]) -> str:
    """``local/tiny`` inside GISP_MODELS_DIR; the reference a job submits."""
    build_tiny_model(service_dirs["models"] / "tiny")
    return "local/tiny"


def calibration_text() -> str:
    return "\n".join(CORPUS * 4) + "\n"


# --- settings and the API ---


@pytest.fixture(scope="session")
def service_env(database_url: str, s3_endpoint: str, service_dirs: dict[str, Path]) -> dict[str, str]:
    """GISP_* variables of this session's service; the API in-process and workers in subprocesses share them."""
    run = uuid.uuid4().hex[:8]
    return {
        "GISP_ENVIRONMENT": "test",
        "GISP_DATABASE_URL": database_url,
        "GISP_BROKER_URL": REDIS_URL,
        "GISP_TASK_QUEUE": f"gisp-test-{run}",
        "GISP_STORAGE_BACKEND": "s3",
        "GISP_S3_ENDPOINT_URL": s3_endpoint,
        "GISP_S3_BUCKET": f"gisp-test-{run}",
        "GISP_S3_CREATE_BUCKET": "true",
        "GISP_MODELS_DIR": str(service_dirs["models"]),
        "GISP_DATA_DIR": str(service_dirs["data"]),
        "GISP_HEARTBEAT_INTERVAL_S": "0.5",
        "GISP_STALE_AFTER_S": "4",
        "GISP_REAPER_INTERVAL_S": "1",
        "GISP_RETRY_BACKOFF_S": "0.5",
        "GISP_TRANSIENT_DEADLINE_S": "60",
        "GISP_REQUEUE_AFTER_S": "3",
        "GISP_MULTIPART_THRESHOLD_BYTES": str(5 * 1024 * 1024),
        "GISP_MULTIPART_CHUNK_BYTES": str(5 * 1024 * 1024),
    }


@pytest.fixture(scope="session")
def service_settings(service_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from core.settings import Settings

    values = {key.removeprefix("GISP_").lower(): value for key, value in service_env.items()}
    return Settings(**values)


@pytest.fixture(scope="session")
def app(service_settings):  # type: ignore[no-untyped-def]
    from api.main import create_app

    return create_app(service_settings)


@pytest.fixture(scope="session")
def make_key(service_settings) -> Callable[[str], str]:  # type: ignore[no-untyped-def]
    """Create an API key for a tenant (created on first use); returns the clear key."""
    from core.db.session import session_scope
    from core.jobs.tenants import create_api_key

    def make(tenant: str) -> str:
        with session_scope(service_settings) as session:
            key, _ = create_api_key(session=session, tenant_name=tenant)
        return key

    return make


@pytest.fixture(scope="session")
def client_factory(app, make_key) -> Iterator[Callable[[str], httpx.Client]]:  # type: ignore[no-untyped-def]
    """An in-process client authenticated as a fresh key of ``tenant``."""
    from fastapi.testclient import TestClient

    clients: list[TestClient] = []

    def make(tenant: str) -> httpx.Client:
        client = TestClient(app, raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {make_key(tenant)}"
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session", autouse=False)
def redis_queue_cleanup(service_env: dict[str, str]) -> Iterator[None]:
    """Remove this session's queues from Redis at the end (other sessions use other queue names)."""
    yield
    import redis

    connection = redis.Redis.from_url(REDIS_URL)
    queue = service_env["GISP_TASK_QUEUE"]
    for name in connection.scan_iter(match=f"{queue}*"):
        connection.delete(name)


# --- a real HTTP server (uvicorn in a thread) for clients that need sockets: SSE, the CLI, a browser ---


@pytest.fixture(scope="session")
def live_server(service_settings) -> Iterator[Callable[..., str]]:  # type: ignore[no-untyped-def]
    """Start the API on a free port with optional setting overrides; returns its base URL.

    Servers started during the session are stopped at its end.
    """
    import threading

    import uvicorn

    from api.main import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides: object) -> str:
        settings = service_settings.model_copy(update=overrides)
        port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=30, what="uvicorn"
        )
        return url

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
