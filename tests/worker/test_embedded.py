"""``gisp serve --embedded`` (SQLite, local storage, filesystem broker, one worker) driven by the client CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def _gisp(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_embedded_server_with_cli_client(tmp_path: Path, service_dirs, tiny_model: str, named_sets) -> None:
    port = free_port()
    state = tmp_path / ".gisp"  # the default state folder, in the folder the commands run from
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GISP_")},
        "GISP_MODELS_DIR": str(service_dirs["models"]),
        "GISP_DATA_DIR": str(service_dirs["data"]),
    }
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "core.cli.main", "serve", "--embedded", "--port", str(port), "--broker", "filesystem"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, timeout=60, what="embedded API"
        )
        client_env = env | {"GISP_API_KEY": (state / "api-key").read_text().strip()}
        submitted = _gisp(
            "jobs", "--url", url, "submit", "--model", tiny_model, "--calibration", "wikitext2",
            "--sparsities", "0.3", "--steps", "2", "--samples", "2", "--seq-len", "16", "--wait",
            env=client_env,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr + (tmp_path / "serve.log").read_text()[-3000:]
        job_id = submitted.stdout.split()[0]
        downloaded = _gisp(
            "jobs",
            "--url",
            url,
            "download",
            job_id,
            "--sparsity",
            "0.3",
            "--out",
            str(tmp_path / "out"),
            env=client_env,
        )
        assert downloaded.returncode == 0, downloaded.stderr
        folder = Path(downloaded.stdout.strip())
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        # A point that is not a target is built on demand; the client says so instead of waiting silently.
        on_demand = _gisp(
            "jobs", "--url", url, "download", job_id, "--sparsity", "0.2", "--out", str(tmp_path / "out2"),
            env=client_env,
        )  # fmt: skip
        assert on_demand.returncode == 0, on_demand.stderr
        assert "checkpoint 0.2000 is being built on the server" in on_demand.stderr
        assert (Path(on_demand.stdout.strip()) / "model.safetensors").is_file()

        status = _gisp("jobs", "--url", url, "status", job_id, "--json", env=client_env)
        assert '"status": "succeeded"' in status.stdout
        denied = _gisp("jobs", "--url", url, "status", job_id, env=client_env | {"GISP_API_KEY": "wrong"})
        assert denied.returncode == 2 and "unauthorized" in denied.stderr

        # `gisp keys create` beside the running server writes where the server reads: the new key works.
        created = _gisp("keys", "create", "--tenant", "acme", env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        listed = httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {created.stdout.strip()}"})
        assert listed.status_code == 200 and listed.json()["data"] == []
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
