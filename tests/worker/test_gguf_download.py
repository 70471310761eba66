"""A finished job's checkpoint as a GGUF file and in the other layout, built on demand by the real worker."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.worker.conftest import wait_for_job

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]


def ready(client, url: str, params: dict[str, str]):  # type: ignore[no-untyped-def]
    first = client.get(url, params=params)
    assert first.status_code == 202, first.text
    return wait_until(
        lambda: (r := client.get(url, params=params)).status_code == 200 and r,
        timeout=120,
        interval=0.2,
        what=f"the {params} checkpoint",
    )


def generates(path: Path) -> str:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False, seed=0)
    out = llm("The quick brown", max_tokens=8, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1
    return str(out["choices"][0]["text"])


def test_gguf_and_other_layout_on_demand(
    worker, client_factory, make_key, tiny_model: str, live_server, tmp_path: Path
) -> None:
    key = make_key("gguf")
    client = client_factory("gguf")
    client.headers["Authorization"] = f"Bearer {key}"
    body = {
        "model": tiny_model,
        "calibration": {"name": "wikitext2"},
        "samples": 4,
        "seq_len": 32,
        "sparsities": [0.3],
        "steps": 4,
    }
    job = client.post("/v1/jobs", json=body).json()
    done = wait_for_job(client, job["id"], lambda j: j["status"] in {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    url = f"/v1/jobs/{job['id']}/checkpoints/0.3"

    for params, field in (
        ({"format": "zip"}, "format"),
        ({"format": "gguf", "type": "q4_k"}, "type"),
        ({"type": "f16"}, "type"),
        ({"layout": "diagonal"}, "layout"),
    ):
        refused = client.get(url, params=params)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == field, refused.text

    gguf = ready(client, url, {"format": "gguf", "type": "f32"})
    assert gguf.headers["content-type"] == "application/octet-stream"
    assert gguf.content[:4] == b"GGUF"
    assert hashlib.sha256(gguf.content).hexdigest() == gguf.headers["x-checksum-sha256"]
    assert client.get(url, params={"format": "gguf", "type": "f32"}).content == gguf.content  # cached
    assert client_factory("gguf-other").get(url, params={"format": "gguf", "type": "f32"}).status_code == 404

    listing = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    variants = {c["variant"]: c for c in listing}
    assert variants["gguf-f32"]["download_url"].endswith("?format=gguf&type=f32")
    assert variants[""]["layout"] == "nonuniform"

    uniform = ready(client, url, {"layout": "uniform"})
    with tarfile.open(fileobj=io.BytesIO(uniform.content)) as tar:
        (config,) = [m for m in tar.getmembers() if m.name.endswith("/config.json")]
        handle = tar.extractfile(config)
        assert handle is not None
        stock = json.loads(handle.read())
        assert stock["model_type"] == "llama"  # the stock class: no custom code, no per-layer sizes
        assert "auto_map" not in stock and "gisp_layers" not in stock

    server = live_server()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISP_")} | {"GISP_API_KEY": key}
    command = [sys.executable, "-m", "core.cli.main", "jobs", "download", job["id"], "--sparsity", "0.3"]
    command += ["--format", "gguf", "--type", "q8_0", "--out", str(tmp_path / "cli"), "--url", server]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    written = Path(result.stdout.strip().splitlines()[-1])
    assert written.suffix == ".gguf" and written.parent == tmp_path / "cli"
    (tmp_path / "api.gguf").write_bytes(gguf.content)
    generates(tmp_path / "api.gguf")
    generates(written)
