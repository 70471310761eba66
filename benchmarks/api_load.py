"""Status-poll load test: N concurrent clients polling GET /v1/jobs/{id} on loopback.

Each client polls every --interval seconds (as a status poller does; 0 polls back to back, which measures
saturation instead). Starts its own API (uvicorn, --workers) on a free loopback port against a scratch database (SQLite in a
temporary folder, or --database-url, e.g. a PostgreSQL database you created for the purpose), seeds jobs
and a key, then runs a bounded number of requests within a time limit and prints p50/p99 latency and the
error count. Exit status 1 when --check is given and the target (p99 < 50 ms, 0 errors) is missed.

    python benchmarks/api_load.py --clients 32 --requests 4000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(env: dict[str, str], jobs: int) -> tuple[str, list[str]]:
    """Migrate the scratch database, create a key and ``jobs`` queued jobs (nothing is enqueued)."""
    os.environ.update(env)
    from core.db.migrate import upgrade
    from core.db.session import session_scope
    from core.jobs import crud
    from core.jobs.tenants import create_api_key
    from core.schemas.jobs import JobSpec
    from core.settings import get_settings

    get_settings.cache_clear()
    upgrade(get_settings().database_url)
    spec = JobSpec.model_validate(
        {"model": "local/bench", "calibration": {"name": "wikitext2"}, "sparsities": [0.2, 0.4]}
    )
    with session_scope() as session:
        key, record = create_api_key(session=session, tenant_name="bench")
        ids = [
            crud.create_job(session=session, tenant_id=record.tenant_id, job_in=spec, idempotency_key=None)[
                0
            ].id
            for _ in range(jobs)
        ]
    return key, ids


class Connection:
    """A minimal HTTP/1.1 keep-alive client: httpx's own overhead would dominate what is measured here."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {key}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + self.auth + b"\r\n")
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def client_loop(
    connection: Connection,
    ids: list[str],
    budget: list[int],
    deadline: float,
    latencies: list[float],
    errors: list[str],
    interval: float,
) -> None:
    index = 0
    await asyncio.sleep(random.uniform(0, interval))  # clients do not poll in lockstep
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        job_id = ids[index % len(ids)]
        index += 1
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(connection.get(f"/v1/jobs/{job_id}"), timeout=10)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as error:
            errors.append(type(error).__name__)
            await connection.close()
            connection.writer = None
            continue
        elapsed = time.perf_counter() - started
        if status == 200:
            latencies.append(elapsed)
        else:
            errors.append(f"HTTP {status}")
        if interval:
            await asyncio.sleep(max(0.0, interval - elapsed))
    await connection.close()


async def run_load(
    port: int, key: str, ids: list[str], clients: int, requests: int, seconds: float, interval: float
) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    budget = [requests]
    connections = [Connection(port, key) for _ in range(clients)]
    for connection, job_id in zip(connections, ids * clients, strict=False):  # warm up connections
        await connection.get(f"/v1/jobs/{job_id}")
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(
            client_loop(connection, ids[i:] + ids[:i], budget, deadline, latencies, errors, interval)
            for i, connection in enumerate(connections)
        )
    )
    wall = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "throughput_rps": (len(latencies) + len(errors)) / wall if wall else 0.0,
        "seconds": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4000, help="total requests (bounded)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit of the load phase")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.25,
        help="seconds between one client's polls (0: back-to-back, a saturation test)",
    )
    parser.add_argument("--jobs", type=int, default=200, help="jobs seeded and polled round-robin")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--database-url", help="scratch database (default: SQLite in a temporary folder)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless p99 < 50 ms and 0 errors")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gisp-load-") as tmp:
        env = {
            "GISP_ENVIRONMENT": "development",
            "GISP_DATABASE_URL": args.database_url or f"sqlite:///{tmp}/load.db",
            "GISP_STORAGE_BACKEND": "local",
            "GISP_STORAGE_DIR": f"{tmp}/storage",
            "GISP_BROKER_URL": "filesystem://",
            "GISP_BROKER_DIR": f"{tmp}/broker",
            "GISP_MODELS_DIR": tmp,
        }
        key, ids = seed(env, args.jobs)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(args.workers), "--log-level", "warning", "--no-access-log"],
            cwd=REPO, env={**os.environ, **env},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the API did not start")
                time.sleep(0.1)
            result = asyncio.run(
                run_load(port, key, ids, args.clients, args.requests, args.seconds, args.interval)
            )
        finally:
            server.terminate()
            server.wait(timeout=30)

    database = "postgresql" if args.database_url and "postgres" in args.database_url else "sqlite"
    sys.stdout.write(
        f"clients={args.clients} requests={result['requests']} errors={result['errors']} "
        f"p50={result['p50_ms']:.1f}ms p99={result['p99_ms']:.1f}ms max={result['max_ms']:.1f}ms "
        f"throughput={result['throughput_rps']:.0f}/s interval={args.interval}s workers={args.workers} "
        f"database={database}\n"
    )
    if result["error_kinds"]:
        sys.stdout.write(f"error kinds: {', '.join(result['error_kinds'])}\n")
    ok = result["errors"] == 0 and result["p99_ms"] < 50
    sys.stdout.write(f"target p99<50ms and 0 errors: {'met' if ok else 'MISSED'}\n")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
