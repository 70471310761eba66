"""``gisp demo``: the main job end to end on the embedded default, as a new user first meets the product.

Starts ``gisp serve --embedded`` (SQLite, a local object store, a local Celery worker), puts SmolLM2-135M-
Instruct into the models folder, submits a GISP job calibrated on WikiText-2 at two sparsities, follows it
with a progress bar, downloads one checkpoint, loads it and prints its report.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.cli.client import ServiceClient


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="run the main job end to end on the embedded default")
    demo.add_argument("--state-dir", type=Path, default=Path(".gisp-demo"), help="embedded server's data")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="where the checkpoint lands")
    demo.add_argument("--sparsities", default="0.2,0.4")
    demo.add_argument("--steps", type=int, default=8, help="iterative steps (the job default is larger)")
    demo.add_argument("--samples", type=int, default=16, help="calibration sequences per step")
    demo.add_argument("--port", type=int, default=0, help="0 picks a free port")
    demo.add_argument("--timeout", type=float, default=1800)
    demo.set_defaults(handler=run)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(client: ServiceClient, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the embedded server exited with code {server.returncode}")
        try:
            if client.http.get("/healthz").status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise TimeoutError("the embedded server did not become healthy")


def run(args: argparse.Namespace) -> int:
    from core.assets import SMOLLM2_NAME, smollm2_model_dir

    models_dir = Path(os.environ.get("GISP_MODELS_DIR", "models")).resolve()
    print(f"model: SmolLM2-135M-Instruct → {smollm2_model_dir(models_dir)}", flush=True)
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, GISP_MODELS_DIR=str(models_dir))
    server = subprocess.Popen(
        [sys.executable, "-m", "core.cli.main", "serve", "--embedded", "--port", str(port),
         "--state-dir", str(args.state_dir)],
        env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        probe = ServiceClient(url, None)
        _wait_healthy(probe, server, timeout=180)
        probe.close()
        key = (args.state_dir / "api-key").read_text().strip()
        client = ServiceClient(url, key)
        sparsities = [float(s) for s in args.sparsities.split(",")]
        job = client.submit(
            {
                "model": {"id": f"local/{SMOLLM2_NAME}"},
                "calibration": {"name": "wikitext2"},
                "samples": args.samples,
                "seq_len": 128,
                "reconstruction_samples": 4 * args.samples,
                "objective": "perplexity",
                "method": "gisp",
                "sparsities": sparsities,
                "steps": args.steps,
            }
        )
        print(f"job {job['id']} submitted to {url}", flush=True)
        job = client.wait(job["id"], timeout=args.timeout)
        if job["status"] != "succeeded":
            print(f"job {job['status']}: {json.dumps(job.get('error'))}", file=sys.stderr)
            return 1
        checkpoint = client.download(job["id"], max(sparsities), args.out)
        print(f"checkpoint: {checkpoint}")
        report = client.http.get(f"/v1/jobs/{job['id']}/report")
        print(json.dumps(report.json() if report.status_code == 200 else report.text, indent=2)[:6000])
        _generate(checkpoint)
        return 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def _generate(checkpoint: Path) -> None:
    """Load the downloaded checkpoint with stock transformers, and let it speak."""
    import torch

    tokenizer, model = load_checkpoint(checkpoint)
    prompt = "The capital of France is"
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    print(
        f"{type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters): "
        f"{tokenizer.decode(out[0], skip_special_tokens=True)!r}"
    )


def load_checkpoint(checkpoint: Path) -> tuple[Any, Any]:
    """Tokenizer and model of a checkpoint folder, without a prompt and without running code from the folder.

    A non-uniform checkpoint loads through the engine's own ``GispForCausalLM`` (the model files shipped beside
    its weights are never imported); its config names the pruned family, so transformers loads its tokenizer
    without asking "Do you wish to run the custom code?".
    """
    import torch

    from core.engine.loading import load_without_remote_code

    model, tokenizer = load_without_remote_code(checkpoint, dtype=torch.float32)
    return tokenizer, model.eval()
