"""Submit → run on a real Celery worker → poll → download → load the checkpoint with transformers."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import calibration_text, wait_until
from tests.worker.conftest import wait_for_job

pytestmark = pytest.mark.services

TERMINAL = {"succeeded", "failed", "cancelled"}


def _extract(archive: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (folder,) = list(into.iterdir())
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    for line in sums:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    return folder


def test_job_end_to_end(worker, client_factory, tiny_model: str, service_dirs, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client = client_factory("e2e")
    upload = client.post(
        "/v1/calibration-sets",
        files={"file": ("cal.txt", calibration_text().encode())},
        data={"objective": "perplexity"},
    )
    assert upload.status_code == 201, upload.text
    body = {
        "model": tiny_model,
        "calibration": {"set_id": upload.json()["id"]},
        "samples": 4,
        "seq_len": 32,
        "sparsities": [0.15, 0.3],
        "steps": 4,
        "layout": "uniform",
        "evaluations": ["perplexity"],
    }
    job = client.post("/v1/jobs", json=body).json()
    running = wait_for_job(client, job["id"], lambda j: j["progress"]["step"] >= 1 or j["status"] in TERMINAL)
    assert running["progress"]["total_steps"] == 4
    done = wait_for_job(client, job["id"], lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == 4
    assert done["progress"]["calibration_loss"] > 0
    assert done["error"] is None
    assert [c["label"] for c in done["checkpoints"]] == ["0.1500", "0.3000"]
    assert all(c["status"] == "ready" and c["is_target"] for c in done["checkpoints"])

    events = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 3}).json()
    assert len(events["data"]) == 3 and events["next_cursor"]
    all_events = (
        events["data"]
        + client.get(
            f"/v1/jobs/{job['id']}/events", params={"cursor": events["next_cursor"], "limit": 500}
        ).json()["data"]
    )
    steps = [e["data"]["step"] for e in all_events if e["kind"] == "step"]
    assert steps == [1, 2, 3, 4]
    states = [e["data"]["status"] for e in all_events if e["kind"] == "state"]
    assert states == ["queued", "running", "succeeded"]

    listing = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()
    assert listing["trajectory_range"]["max"] >= 0.3

    download = client.get(f"/v1/jobs/{job['id']}/checkpoints/0.3")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/x-tar"
    assert int(download.headers["content-length"]) == len(download.content)
    folder = _extract(download.content, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("The quick brown fox", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size
    assert torch.isfinite(logits).all()

    direct = client.get(f"/v1/jobs/{job['id']}/checkpoints/0.3/files").json()
    assert {f["name"] for f in direct["files"]} >= {"config.json", "model.safetensors"}
    weights = next(f for f in direct["files"] if f["name"] == "model.safetensors")
    fetched = httpx.get(weights["url"], timeout=30)
    assert hashlib.sha256(fetched.content).hexdigest() == weights["sha256"]

    report = client.get(f"/v1/jobs/{job['id']}/report")
    assert report.status_code == 200
    assert len(report.json()["trajectory"]["steps"]) == 4
    # the operator's folders never reach a tenant: the model is known by its reference
    assert report.json()["trajectory"]["base_model"]["id"] == tiny_model
    assert str(service_dirs["models"]) not in report.text
    assert (
        str(service_dirs["models"])
        not in client.get(f"/v1/jobs/{job['id']}/layers", params={"sparsity": 0.3}).text
    )
    evaluated = report.json()["evaluation"]
    assert [r["sparsity"] for r in evaluated["results"]] == [0.0, 0.15, 0.3], evaluated
    assert all(r["metrics"]["perplexity"]["perplexity"] > 1 for r in evaluated["results"])
    if "loss.png" in report.json()["files"]:
        plot = client.get(f"/v1/jobs/{job['id']}/report/files/loss.png")
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")

    # A sparsity on the trajectory that was not a target is materialised on demand: 202, then the download.
    reached = listing["reached_sparsities"]
    extra = f"{reached[0]:.4f}"
    first = client.get(f"/v1/jobs/{job['id']}/checkpoints/{extra}")
    assert first.status_code == 202, first.text
    assert first.headers["retry-after"]
    ready = wait_until(
        lambda: (r := client.get(f"/v1/jobs/{job['id']}/checkpoints/{extra}")).status_code == 200 and r,
        timeout=60,
        interval=0.2,
        what="the on-demand checkpoint",
    )
    _extract(ready.content, tmp_path / "extra")
    beyond = client.get(f"/v1/jobs/{job['id']}/checkpoints/0.9")
    assert beyond.status_code == 409


def test_cancel_running_job_keeps_partial_trajectory(worker, client_factory, tiny_model: str) -> None:
    client = client_factory("cancel-running")
    body = {
        "model": tiny_model,
        "calibration": {"name": "wikitext2"},
        "samples": 2,
        "seq_len": 32,
        "sparsities": [0.4],
        "steps": 30,
    }
    job = client.post("/v1/jobs", json=body).json()
    wait_for_job(client, job["id"], lambda j: j["progress"]["step"] >= 1)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] in {"cancelling", "cancelled"}
    done = wait_for_job(client, job["id"], lambda j: j["status"] in TERMINAL, timeout=60)
    assert done["status"] == "cancelled"
    assert done["progress"]["step"] < 30
    listing = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()
    assert len(listing["reached_sparsities"]) == done["progress"]["step"]


def test_user_error_fails_at_once(worker, client_factory, tiny_model: str, service_dirs) -> None:
    # A model folder whose weights the engine refuses (pickle): a user error, not a retry.
    broken = service_dirs["models"] / "pickled"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "pytorch_model.bin").write_bytes(b"not really")
    client = client_factory("user-error")
    body = {"model": "local/pickled", "calibration": {"name": "wikitext2"}, "sparsities": [0.2], "steps": 2}
    job = client.post("/v1/jobs", json=body).json()
    done = wait_for_job(client, job["id"], lambda j: j["status"] in TERMINAL, timeout=60)
    assert done["status"] == "failed"
    assert done["error"]["code"] not in {"internal_error", "retries_exhausted"}
    assert done["attempt"] == 1
