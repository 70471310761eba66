"""examples/submit_over_http.py, run as a user runs it, against a live API and a real Celery worker."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def test_the_http_example_submits_follows_and_downloads_a_verified_checkpoint(
    worker, live_server, make_key, tiny_model: str, tmp_path: Path
) -> None:
    url = live_server()
    out = tmp_path / "ckpt"
    done = subprocess.run(
        [
            sys.executable, "examples/submit_over_http.py", "--url", url, "--model", tiny_model,
            "--sparsity", "0.3", "--steps", "3", "--samples", "2", "--seq-len", "16", "--out", str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"GISP_API_KEY": make_key("example-http"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitted " in done.stdout
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.parent == out
    manifest = json.loads((folder / "gisp_manifest.json").read_text())
    assert manifest["sparsity"] >= 0.3
    # The folder the example printed is complete: every file SHA256SUMS names is there and matches.
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    assert len(sums) >= 3
    for line in sums:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
