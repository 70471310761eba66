"""``gisp serve``, ``gisp worker``, ``gisp db`` and ``gisp keys``; the job client is in ``core.cli.client``.

Handlers import the web stack and Celery lazily, so ``gisp prune`` never pays for them.

``gisp serve --embedded`` runs the whole service on one machine: SQLite and a local-folder object store
under ``--state-dir``, Redis as broker when one answers at GISP_BROKER_URL (else Celery's filesystem broker
in the state folder), one Celery worker subprocess (with the reaper's beat) and the API in this process.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.cli import client


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the API (and with --embedded, a local worker too)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--embedded", action="store_true", help="SQLite + local storage + a local worker")
    serve.add_argument("--state-dir", type=Path, default=Path(".gisp"), help="embedded mode's data folder")
    serve.add_argument(
        "--broker", choices=["auto", "redis", "filesystem"], default="auto", help="embedded mode's broker"
    )
    serve.add_argument("--migrate", action="store_true", help="apply database migrations first")
    serve.set_defaults(handler=run_serve)

    worker = subparsers.add_parser("worker", help="run a Celery worker on the GPU queue")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument(
        "--beat", action="store_true", help="also run the reaper's schedule (one per deployment)"
    )
    worker.add_argument("--maintenance-only", action="store_true", help="consume only the reaper's queue")
    worker.set_defaults(handler=run_worker)

    db = subparsers.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="migrate to the newest schema").set_defaults(
        handler=run_db_upgrade
    )
    downgrade = db_commands.add_parser("downgrade", help="migrate down to a revision")
    downgrade.add_argument("revision", nargs="?", default="-1")
    downgrade.set_defaults(handler=run_db_downgrade)

    keys = subparsers.add_parser(
        "keys", help="API keys (in GISP_DATABASE_URL, else the embedded state's database, as `serve` uses)"
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key for a tenant and print it (shown once)")
    create.add_argument("--tenant", required=True)
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key")
    for command, handler in ((create, run_keys_create), (revoke, run_keys_revoke)):
        command.add_argument(
            "--state-dir", type=Path, default=Path(".gisp"), help="the embedded server's state folder"
        )
        command.set_defaults(handler=handler)

    client.add_parsers(subparsers)


# --- database and keys ---


def run_db_upgrade(args: argparse.Namespace) -> int:
    from core.db.migrate import upgrade
    from core.settings import get_settings

    upgrade(get_settings().database_url)
    return 0


def run_db_downgrade(args: argparse.Namespace) -> int:
    from core.db.migrate import downgrade
    from core.settings import get_settings

    downgrade(get_settings().database_url, args.revision)
    return 0


def _keys_settings(state_dir: Path) -> Any:
    """The database the server reads keys from: GISP_DATABASE_URL, else the embedded state's (migrated)."""
    from core.db.migrate import upgrade
    from core.settings import Settings, get_settings

    if os.environ.get("GISP_DATABASE_URL"):
        return get_settings()
    settings = Settings(database_url=f"sqlite:///{state_dir.resolve() / 'gisp.db'}")
    upgrade(settings.database_url)  # a no-op when `gisp serve --embedded` created it already
    return settings


def run_keys_create(args: argparse.Namespace) -> int:
    from core.db.session import session_scope
    from core.jobs.tenants import create_api_key

    with session_scope(_keys_settings(args.state_dir)) as session:
        key, _ = create_api_key(session=session, tenant_name=args.tenant)
    print(key)
    return 0


def run_keys_revoke(args: argparse.Namespace) -> int:
    from core.db.session import session_scope
    from core.jobs.tenants import revoke_api_key

    with session_scope(_keys_settings(args.state_dir)) as session:
        revoked = revoke_api_key(session=session, key=args.key)
    if not revoked:
        print("error: no active key matches", file=sys.stderr)
        return 1
    print("revoked")
    return 0


# --- processes ---


def worker_command(
    queue: str,
    *,
    concurrency: int,
    beat: bool,
    schedule: Path | None,
    maintenance_only: bool,
    loglevel: str = "INFO",
) -> list[str]:
    queues = f"{queue}.maintenance" if maintenance_only else f"{queue},{queue}.maintenance"
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", queues, "-c", str(concurrency), "-P", "prefork",
        "--without-mingle", "--without-gossip", "--loglevel", loglevel,
    ]  # fmt: skip
    if beat:
        # The schedule file must be writable: the images run as a non-root user in a read-only /app.
        schedule = schedule or Path(tempfile.gettempdir()) / "gisp-celerybeat-schedule"
        command += ["-B", "-s", str(schedule)]
    return command


def run_worker(args: argparse.Namespace) -> int:
    from core.settings import get_settings

    settings = get_settings()
    command = worker_command(
        settings.task_queue,
        concurrency=args.concurrency,
        beat=args.beat,
        schedule=None,
        maintenance_only=args.maintenance_only,
    )
    os.execv(command[0], command)
    return 0  # pragma: no cover


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"}:
        return False
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=timeout
        ) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def embedded_environment(state_dir: Path, broker: str) -> dict[str, str]:
    """GISP_* variables of the embedded mode; the ones already set in the environment win."""
    state = state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    redis_url = os.environ.get("GISP_BROKER_URL", "redis://127.0.0.1:6379/0")
    use_redis = broker == "redis" or (broker == "auto" and redis_reachable(redis_url))
    defaults = {
        "GISP_ENVIRONMENT": "development",
        "GISP_DATABASE_URL": f"sqlite:///{state / 'gisp.db'}",
        "GISP_STORAGE_BACKEND": "local",
        "GISP_STORAGE_DIR": str(state / "storage"),
        "GISP_BROKER_URL": redis_url if use_redis else "filesystem://",
        "GISP_BROKER_DIR": str(state / "broker"),
        "GISP_MODELS_DIR": str(Path("models").resolve()),
    }
    if use_redis:
        # One embedded instance must not take another's tasks from a shared Redis.
        digest = hashlib.sha256(str(state).encode()).hexdigest()[:10]
        defaults["GISP_TASK_QUEUE"] = f"gisp-embedded-{digest}"
    env = {key: os.environ.get(key, value) for key, value in defaults.items()}
    # GISP_DATA_DIR is left alone: unset, the engine's default folder of datasets applies.
    if not use_redis:
        env["GISP_BROKER_URL"] = "filesystem://"
    return env


def _local_key(state_dir: Path) -> str:
    """The embedded instance's key for tenant 'local', created once and kept in the state folder (0600)."""
    from core.db.session import session_scope
    from core.jobs.tenants import create_api_key

    path = state_dir / "api-key"
    if path.exists():
        return path.read_text().strip()
    with session_scope() as session:
        key, _ = create_api_key(session=session, tenant_name="local")
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    worker = None
    if args.embedded:
        env = embedded_environment(args.state_dir, args.broker)
        os.environ.update(env)
    from api.main import create_app
    from core.db.migrate import upgrade
    from core.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    if args.embedded or args.migrate:
        upgrade(settings.database_url)
    if args.embedded:
        key = _local_key(args.state_dir.resolve())
        command = worker_command(
            settings.task_queue,
            concurrency=1,
            beat=True,
            schedule=args.state_dir.resolve() / "beat-schedule",
            maintenance_only=False,
            loglevel="WARNING",  # one machine, one terminal: job progress shows through the API instead
        )
        worker = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)
        broker = "redis" if settings.broker_url.startswith("redis") else "filesystem"
        base = f"http://{args.host}:{args.port}"
        print(
            f"GISP embedded: console {base}/  API docs {base}/v1/docs  broker={broker}  state={args.state_dir}\n"
            f"API key (tenant 'local'): {key}",
            flush=True,
        )
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turning that into SystemExit lets the
    # finally block below stop the worker instead of leaving it orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
    return 0
