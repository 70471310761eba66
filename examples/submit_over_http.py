"""Submit a pruning job and download a checkpoint over HTTP, with nothing but httpx.

    gisp serve --embedded            # in another terminal; it prints the API key
    GISP_API_KEY=... python examples/submit_over_http.py --model local/smollm2 --out ckpt/

Every endpoint used here is documented at /v1/docs; errors are {"error": {"code", "message", "field"}}.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tarfile
import time
from pathlib import Path

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("GISP_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--model", default="local/smollm2")
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per calibration sequence")
    parser.add_argument("--out", type=Path, default=Path("ckpt"))
    args = parser.parse_args()

    headers = {"Authorization": f"Bearer {os.environ['GISP_API_KEY']}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60) as http:
        # 1. Submit. The Idempotency-Key makes a retry after a network error return the same job.
        body = {
            "model": {"id": args.model},
            "calibration": {"name": "wikitext2"},
            "sparsities": [args.sparsity],
            "steps": args.steps,
            "samples": args.samples,
            "seq_len": args.seq_len,
        }
        answer = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"example-{time.time_ns()}"})
        if answer.status_code >= 400:
            print(f"refused: {answer.json()['error']}", file=sys.stderr)
            return 1
        job = answer.json()
        print(f"submitted {job['id']}; effective settings: method={job['request']['method']}")

        # 2. Follow it (GET /v1/jobs/{id}/events/stream streams the same progress as server-sent events).
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(1)
            job = http.get(f"/v1/jobs/{job['id']}").json()
            progress = job["progress"]
            print(f"  {job['status']} {progress['phase']} step {progress['step']}/{progress['total_steps']}")
        if job["status"] != "succeeded":
            print(f"job {job['status']}: {job['error']}", file=sys.stderr)
            return 1

        # 3. Download: a tar stream with SHA256SUMS (202 while a new sparsity is materialised: poll again).
        url = f"/v1/jobs/{job['id']}/checkpoints/{args.sparsity:.4f}"
        while (answer := http.get(url)).status_code == 202:
            time.sleep(float(answer.headers.get("Retry-After", "2")))
        answer.raise_for_status()
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as archive:
            archive.extractall(args.out, filter="data")
            folder = args.out / archive.getnames()[0].split("/")[0]
        for line in (folder / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split("  ", 1)
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
