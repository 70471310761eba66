"""The production compose stack, run for real on this machine, driven from the host as a user would.

    .venv/bin/python scripts/compose_check.py [--keep-up] [--mirror URL]

Not run by CI (it needs Docker and takes minutes). It builds what a machine without registry access lacks
(a Debian base image, ./wheelhouse), builds the images, starts docker-compose.yml with
docker-compose.local.yml, waits until every service is healthy, creates an API key, imports a tiny model
into ./models, then runs the embedded demo's flow against the stack: upload calibration text, submit, wait,
download the checkpoint through the API and through its presigned URLs, load it with transformers. It then
kills the worker container in the middle of a second job, restarts it, and checks that the job resumed from
its last step and succeeded. Every stage prints its duration; the stack is always removed
(`down -v`), and the script ends with PASS or FAIL (exit status 1).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.cli.client import ServiceClient  # noqa: E402

BASE_IMAGE = "gisp-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
PROJECT = "gisp-check"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.local.yml")
HEALTHY_SERVICES = ("postgres", "redis", "minio", "api", "scheduler", "worker-cpu")
ONE_SHOT_SERVICES = ("migrate", "create-bucket")
WORKER = "worker-cpu"
MODEL_NAME = "compose-check-tiny"
# Debian bookworm's Python is 3.11.2: redis needs async-timeout below 3.11.3, which a newer host Python skips.
WHEELS = [
    "torch==2.13.0",
    ".[api,worker]",
    "moto[server]>=5,<6",
    "async-timeout>=4.0.3",
    "pip",
    "setuptools",
    "wheel",
]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pruning removes attention heads and MLP channels from a trained language model.",
    "A small model answers quickly; a large model answers well.",
    "Calibration text drives the gradients that score every structure.",
]


class CheckFailed(Exception):
    """A stage found the stack not behaving as documented."""


def require(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"[....] {name}", flush=True)
    try:
        yield
    except BaseException:
        print(f"[FAIL] {name} ({time.monotonic() - started:.1f} s)", flush=True)
        raise
    print(f"[ ok ] {name} ({time.monotonic() - started:.1f} s)", flush=True)


def run(command: list[str], *, env: dict[str, str] | None = None, capture: bool = False) -> str:
    done = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=capture, check=False)
    if done.returncode != 0:
        detail = (done.stderr or "")[-3000:] if capture else ""
        raise CheckFailed(f"{' '.join(command[:6])} … exited {done.returncode}\n{detail}")
    return done.stdout if capture else ""


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """`docker compose` (v2) or `docker-compose` (v1) on the two files, under one project name."""

    def __init__(self, env: dict[str, str]) -> None:
        v2 = (
            subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
        )
        self.base = ["docker", "compose"] if v2 else ["docker-compose"]
        self.base += ["-p", PROJECT] + [arg for name in COMPOSE_FILES for arg in ("-f", name)]
        self.env = env

    def __call__(self, *args: str, capture: bool = False) -> str:
        return run([*self.base, *args], env=self.env, capture=capture)

    def container(self, service: str) -> str:
        ids = self("ps", "-a", "-q", service, capture=True).split()
        require(len(ids) == 1, f"expected one container of {service}, found {ids}")
        return ids[0]

    def state(self, service: str) -> str:
        """`healthy`, `starting`, `unhealthy`, or for a container without a healthcheck its status/exit code."""
        template = (
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}:{{.State.ExitCode}}{{end}}"
        )
        return run(["docker", "inspect", "-f", template, self.container(service)], capture=True).strip()


# --- what a machine without registry access needs first ---


def ensure_base_image(mirror: str) -> str:
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0:
        return "present"
    require(shutil.which("debootstrap"), "debootstrap is missing: apt-get install -y debootstrap")
    with tempfile.TemporaryDirectory(prefix="gisp-base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(rootfs),
                mirror,
            ]
        )
        security = mirror.rstrip("/").removesuffix("/debian") + "/debian-security"
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n"
            f"deb {security} bookworm-security main\n"
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / cache).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "-c", "ENV LANG=C.UTF-8", "-c", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],
            stdin=tar.stdout,
            capture_output=True,
            check=False,
        )
        tar.wait()
        require(
            imported.returncode == 0 and tar.returncode == 0, f"docker import failed: {imported.stderr!r}"
        )
    return "built"


def ensure_wheelhouse() -> str:
    wheelhouse = ROOT / "wheelhouse"
    if any(wheelhouse.glob("torch-*.whl")):
        return "present"
    run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheelhouse), *WHEELS])
    for own in wheelhouse.glob("gisp_service-*.whl"):  # the builds install the project from its source
        own.unlink()
    return "built"


def import_tiny_model() -> Path:
    """A tiny random Llama, imported by `gisp models import` under the strictest umask an operator may have."""
    from tests.utils.tiny import save_tiny_model

    models = ROOT / "models"
    target = models / MODEL_NAME
    if target.exists():
        shutil.rmtree(target)
    (ROOT / "data").mkdir(exist_ok=True)  # mounted read-only into the containers
    with tempfile.TemporaryDirectory() as scratch:
        source = save_tiny_model(Path(scratch) / "tiny", layers=4, seed=0)
        previous = os.umask(0o077)
        try:
            gisp = Path(sys.executable).with_name("gisp")
            run(
                [
                    str(gisp),
                    "models",
                    "import",
                    str(source),
                    "--name",
                    MODEL_NAME,
                    "--models-dir",
                    str(models),
                ]
            )
        finally:
            os.umask(previous)
    return target


# --- the user's side ---


def calibration_file(directory: Path) -> Path:
    path = directory / "calibration.txt"
    path.write_text("\n".join(CORPUS * 16) + "\n")
    return path


def job_body(set_id: str, *, steps: int, samples: int, seq_len: int) -> dict[str, Any]:
    return {
        "model": {"id": f"local/{MODEL_NAME}"},
        "calibration": {"set_id": set_id},
        "samples": samples,
        "seq_len": seq_len,
        "objective": "perplexity",
        "method": "gisp",
        "sparsities": [0.2, 0.4],
        "steps": steps,
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_presigned(client: ServiceClient, job_id: str, sparsity: str, out: Path, s3_port: int) -> Path:
    """GET /checkpoints/{s}/files, then every file straight from object storage through its presigned URL."""
    import httpx

    answer = client.http.get(f"/v1/jobs/{job_id}/checkpoints/{sparsity}/files")
    require(
        answer.status_code == 200, f"GET /checkpoints/{sparsity}/files: {answer.status_code} {answer.text}"
    )
    listing = answer.json()
    out.mkdir(parents=True)
    for item in listing["files"]:
        url = urlsplit(item["url"])
        require(
            url.netloc == f"localhost:{s3_port}", f"presigned URL for {url.netloc}, not the public endpoint"
        )
        require(
            parse_qs(url.query).get("X-Amz-Algorithm") == ["AWS4-HMAC-SHA256"], "presigned URL is not SigV4"
        )
        answer = httpx.get(item["url"], timeout=60)
        require(answer.status_code == 200, f"presigned GET of {item['name']}: {answer.status_code}")
        (out / item["name"]).write_bytes(answer.content)
        require(sha256(out / item["name"]) == item["sha256"], f"{item['name']} does not match its sha256")
    return out


def load_and_generate(checkpoint: Path) -> str:
    """Load the downloaded checkpoint the way the demo does, and generate a few tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)  # the checkpoint's own code
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    ids = tokenizer("The quick brown fox", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    require(torch.isfinite(logits).all(), "the checkpoint's logits are not finite")
    require(out.shape[1] > ids.input_ids.shape[1], "generate() produced nothing")
    return f"{type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters"


def step_events(client: ServiceClient, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = client.events(job_id, cursor)
        events += page
        if not cursor:
            return [e for e in events if e["kind"] == "step"]


def request_count(metrics: str, method: str, route: str, status: int) -> float:
    prefix = f'gisp_http_requests_total{{method="{method}",route="{route}",status="{status}"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


# --- the check ---


def check(args: argparse.Namespace, stack: Stack, api_url: str, s3_port: int, scratch: Path) -> None:
    with stage("start the stack (up -d) and wait until every service is healthy"):
        stack("up", "-d")

        def all_healthy() -> bool:
            states = {name: stack.state(name) for name in HEALTHY_SERVICES + ONE_SHOT_SERVICES}
            for name in ONE_SHOT_SERVICES:
                require(states[name] in {"exited:0", "running:0", "created:0"}, f"{name}: {states[name]}")
            require("unhealthy" not in states.values(), f"unhealthy: {states}")
            return all(states[name] == "healthy" for name in HEALTHY_SERVICES) and all(
                states[name] == "exited:0" for name in ONE_SHOT_SERVICES
            )

        wait_for(all_healthy, timeout=args.timeout, what="every service healthy")

    with stage("create an API key (compose run --rm api gisp keys create)"):
        key = stack("run", "--rm", "api", "gisp", "keys", "create", "--tenant", "t", capture=True)
        key = key.strip().splitlines()[-1]
        require(len(key) > 20, f"unexpected key output {key!r}")
    client = ServiceClient(api_url, key, timeout=60)

    with stage("job 1: upload calibration text, submit, wait until it succeeds"):
        calibration = client.upload_calibration(calibration_file(scratch), "perplexity")
        body = job_body(calibration["id"], steps=4, samples=8, seq_len=32)
        job = client.wait(client.submit(body)["id"], timeout=args.timeout, progress=False)
        require(job["status"] == "succeeded", f"job 1 {job['status']}: {job.get('error')}")
        print(f"       job {job['id']}: {[c['label'] for c in job['checkpoints']]} ready", flush=True)

    with stage("download the 0.4 checkpoint through the API and through its presigned URLs; load both"):
        archived = client.download(job["id"], 0.4, scratch / "api", progress=False)
        direct = download_presigned(client, job["id"], "0.4000", scratch / "presigned", s3_port)
        names = sorted(p.name for p in archived.iterdir() if p.name != "SHA256SUMS")
        require(names == sorted(p.name for p in direct.iterdir()), "the two downloads hold different files")
        require(all(sha256(archived / n) == sha256(direct / n) for n in names), "the two downloads differ")
        print(
            f"       {load_and_generate(archived)}; presigned copy identical ({len(names)} files)", flush=True
        )

    with stage("job 2: kill the worker container mid-job, restart it, the job resumes and succeeds"):
        body = job_body(calibration["id"], steps=args.steps, samples=args.samples, seq_len=args.seq_len)
        second = client.submit(body)
        running = wait_for(
            lambda: (j := client.job(second["id"]))["progress"]["step"] >= 2 and j,
            timeout=args.timeout,
            interval=0.2,
            what="job 2 to pass its second step",
        )
        require(running["status"] == "running", f"job 2 is {running['status']} before the kill")
        killed_after = max(e["id"] for e in step_events(client, second["id"]))
        worker = stack.container(WORKER)
        run(["docker", "kill", worker], capture=True)
        after_kill = client.job(second["id"])
        require(after_kill["status"] == "running", f"job 2 is {after_kill['status']} right after the kill")
        print(f"       killed {WORKER} after step {after_kill['progress']['step']}/{args.steps}", flush=True)
        run(["docker", "start", worker], capture=True)
        done = client.wait(second["id"], timeout=args.timeout, progress=False)
        require(done["status"] == "succeeded", f"job 2 {done['status']}: {done.get('error')}")
        require(done["attempt"] >= 2, f"job 2 ran in {done['attempt']} attempt(s): it was never re-claimed")
        resumed = [e["data"]["step"] for e in step_events(client, second["id"]) if e["id"] > killed_after]
        require(
            resumed and min(resumed) > 1, f"the second attempt started again from step {min(resumed or [0])}"
        )
        require(done["progress"]["step"] == args.steps, f"job 2 ended at step {done['progress']['step']}")
        checkpoint = client.download(second["id"], 0.2, scratch / "resumed", progress=False)
        print(
            f"       attempt {done['attempt']} resumed at step {min(resumed)}; "
            f"checkpoint 0.2: {load_and_generate(checkpoint)}",
            flush=True,
        )

    with stage("metrics: every scrape counts the requests of both API processes"):
        import httpx

        scrapes = [httpx.get(f"{api_url}/metrics", timeout=10).text for _ in range(10)]
        posted = {request_count(text, "POST", "/v1/jobs", 201) for text in scrapes}
        require(posted == {2.0}, f"POST /v1/jobs counted {sorted(posted)} across scrapes; 2 were made")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mirror", default="http://deb.debian.org/debian", help="Debian mirror for debootstrap"
    )
    parser.add_argument("--steps", type=int, default=24, help="steps of the job whose worker is killed")
    parser.add_argument("--samples", type=int, default=32, help="calibration sequences of that job")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=900, help="seconds for each wait")
    parser.add_argument("--keep-up", action="store_true", help="leave the stack running (no down -v)")
    args = parser.parse_args()

    api_port, s3_port = free_port(), free_port()
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "MINIO_ROOT_USER": "gisp-" + secrets.token_hex(4),
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24),
        "GISP_API_PORT": str(api_port),
        "GISP_S3_PORT": str(s3_port),
        "GISP_S3_PUBLIC_ENDPOINT_URL": f"http://localhost:{s3_port}",
    }
    stack = Stack(env)
    started = time.monotonic()
    failure: BaseException | None = None
    try:
        with stage(f"base image {BASE_IMAGE}"):
            print(f"       {ensure_base_image(args.mirror)}", flush=True)
        with stage("wheelhouse (the CPU torch and every dependency, built on the host)"):
            print(f"       {ensure_wheelhouse()}", flush=True)
        with stage("build the images"):
            stack("build")
        with stage(f"import a tiny model into ./models/{MODEL_NAME} (umask 077)"):
            import_tiny_model()
        with tempfile.TemporaryDirectory(prefix="gisp-check-") as scratch:
            check(args, stack, f"http://127.0.0.1:{api_port}", s3_port, Path(scratch))
    except (CheckFailed, KeyboardInterrupt, Exception) as error:
        failure = error
        print(f"error: {error}", file=sys.stderr)
        with stage("logs of the stack (last 40 lines per service)"):
            subprocess.run([*stack.base, "logs", "--tail", "40"], cwd=ROOT, env=env, check=False)
    finally:
        if not args.keep_up:
            with stage("tear down (down -v) and remove the imported model"):
                subprocess.run(
                    [*stack.base, "down", "-v", "--remove-orphans"], cwd=ROOT, env=env, check=False
                )
                shutil.rmtree(ROOT / "models" / MODEL_NAME, ignore_errors=True)
    verdict = "FAIL" if failure else "PASS"
    print(f"{verdict} in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
