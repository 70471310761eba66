"""``gisp serve --embedded`` in a subprocess (SQLite, local storage, filesystem broker, one real worker).

Shared by the browser tests and scripts/console_screenshots.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class EmbeddedServer:
    def __init__(
        self, *, models_dir: Path, data_dir: Path, state_dir: Path, step_delay_s: float = 0.0
    ) -> None:
        self.state = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GISP_")},
            "GISP_MODELS_DIR": str(models_dir),
            "GISP_DATA_DIR": str(data_dir),
            "GISP_SSE_POLL_INTERVAL_S": "0.1",
            "GISP_SSE_HEARTBEAT_S": "2",
        }
        if step_delay_s:
            self.env["GISP_DEBUG_STEP_DELAY_S"] = str(step_delay_s)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}-serve.log"

    def start(self) -> str:
        """Start it and wait until it is ready; returns the first line it printed."""
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core.cli.main", "serve", "--embedded", "--port", str(self.port),
             "--state-dir", str(self.state), "--broker", "filesystem"],
            env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_until(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
            timeout=90,
            what="embedded API",
        )
        return self.log_path.read_text().splitlines()[0]

    @property
    def key(self) -> str:
        return (self.state / "api-key").read_text().strip()

    def settings(self):  # type: ignore[no-untyped-def]
        """The server's own settings (its SQLite file and storage folder), for seeding reports in tests."""
        from core.settings import Settings

        return Settings(
            database_url=f"sqlite:///{self.state.resolve() / 'gisp.db'}",
            storage_backend="local",
            storage_dir=self.state.resolve() / "storage",
        )

    def create_key(self, tenant: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "core.cli.main", "keys", "create", "--tenant", tenant],
            env=self.env | {"GISP_DATABASE_URL": f"sqlite:///{self.state.resolve() / 'gisp.db'}"},
            cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return result.stdout.strip()

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
