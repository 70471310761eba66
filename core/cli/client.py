"""``gisp jobs ...``: a client of any GISP server (``--url``, key from ``GISP_API_KEY``).

:class:`ServiceClient` is the reusable part; the ``run_*`` handlers are the command line around it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli.spec_flags import add_spec_flags, spec_values
from core.schemas.jobs import JobSpec

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "cancelled"}
SUBMIT_OWN_FLAGS = ("model", "calibration", "metadata")  # spec fields `jobs submit` spells its own way


class ServiceError(Exception):
    """An error answer of the server, with its ``{code, message, field}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field: {field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field


class ServiceClient:
    def __init__(self, url: str, api_key: str | None, *, timeout: float = 30.0) -> None:
        import httpx  # imported here so that `gisp prune` and friends do not pay for it

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise ServiceError(response.status_code, "http_error", response.text[:200]) from None
            raise ServiceError(response.status_code, error["code"], error["message"], error.get("field"))
        return response

    def upload_calibration(self, path: Path, objective: str) -> dict[str, Any]:
        with path.open("rb") as handle:
            response = self.http.post(
                "/v1/calibration-sets", files={"file": (path.name, handle)}, data={"objective": objective}
            )
        return self._check(response).json()

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/v1/jobs", json=body, headers=headers)).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def jobs(self, status: str | None = None) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            params = {k: v for k, v in {"status": status, "cursor": cursor}.items() if v}
            page = self._check(self.http.get("/v1/jobs", params=params)).json()
            yield from page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def events(self, job_id: str, after: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        params = {"cursor": after} if after else {}
        page = self._check(self.http.get(f"/v1/jobs/{job_id}/events", params=params | {"limit": 500})).json()
        return page["data"], page["next_cursor"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def wait(
        self, job_id: str, *, timeout: float | None = None, interval: float = 1.0, progress: bool = True
    ) -> dict:
        """Poll until the job finishes, showing a progress bar over its steps."""
        from tqdm import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                job = self.job(job_id)
                step, total = job["progress"]["step"], job["progress"]["total_steps"]
                if progress and total and bar is None:
                    bar = tqdm(total=total, unit="step", desc=job_id[:12], file=sys.stderr)
                if bar is not None:
                    bar.n = step
                    loss = job["progress"]["calibration_loss"]
                    bar.set_postfix(status=job["status"], loss=f"{loss:.4f}" if loss is not None else "-")
                if job["status"] in TERMINAL:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.close()

    def download(
        self, job_id: str, sparsity: float, out: Path, *, timeout: float = 3600, progress: bool = True
    ) -> Path:
        """Download (materialising on demand: 202 then poll) and extract a checkpoint; checks SHA256SUMS."""
        from tqdm import tqdm

        label = f"{round(sparsity, 4):.4f}"
        deadline = time.monotonic() + timeout
        while True:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/checkpoints/{label}", timeout=None) as response:
                if response.status_code == 202:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"checkpoint {label} not ready after {timeout}s")
                    time.sleep(float(response.headers.get("Retry-After", "2")))
                    continue
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                total = int(response.headers.get("Content-Length", 0)) or None
                with (
                    tempfile.TemporaryFile() as spool,
                    tqdm(
                        total=total, unit="B", unit_scale=True, disable=not progress, file=sys.stderr
                    ) as bar,
                ):
                    for chunk in response.iter_bytes(1024 * 1024):
                        spool.write(chunk)
                        bar.update(len(chunk))
                    spool.seek(0)
                    return _extract_checked(spool, out)


def _extract_checked(archive: io.BufferedIOBase | Any, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        tar.extractall(out, filter="data")
        roots = {Path(name).parts[0] for name in tar.getnames()}
    (root,) = roots
    folder = out / root
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != digest:
            raise ServiceError(0, "checksum_mismatch", f"{name} does not match its sha256")
    return folder


# --- command line ---


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    jobs = subparsers.add_parser("jobs", help="submit and follow jobs on a GISP server")
    jobs.add_argument("--url", default=os.environ.get("GISP_URL", DEFAULT_URL), help="server URL (GISP_URL)")
    jobs.add_argument("--api-key", default=None, help="API key (default: GISP_API_KEY)")
    commands = jobs.add_subparsers(dest="jobs_command", required=True)

    submit = commands.add_parser("submit", help="submit a pruning job")
    submit.add_argument("--model", required=True, help="hub id org/name or local/<name>")
    submit.add_argument("--revision")
    source = submit.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--calibration", help="named set (wikitext2, c4, ...) or an uploaded set id (cal_...)"
    )
    source.add_argument("--calibration-file", type=Path, help="upload this file (text or JSONL) first")
    add_spec_flags(submit, JobSpec, skip=SUBMIT_OWN_FLAGS)
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish")
    submit.set_defaults(handler=run_submit)

    for name, handler, text in [
        ("status", run_status, "show a job"),
        ("wait", run_wait, "wait for a job to finish (progress bar)"),
        ("events", run_events, "print a job's events"),
        ("cancel", run_cancel, "cancel a job"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument("job_id")
        command.set_defaults(handler=handler)
        if name == "wait":
            command.add_argument("--timeout", type=float)
        if name == "events":
            command.add_argument("--follow", action="store_true", help="keep printing until the job ends")

    listing = commands.add_parser("list", help="list jobs")
    listing.add_argument("--status")
    listing.set_defaults(handler=run_list)

    download = commands.add_parser("download", help="download a checkpoint (materialised on demand)")
    download.add_argument("job_id")
    download.add_argument("--sparsity", type=float, required=True)
    download.add_argument("--out", type=Path, required=True)
    download.add_argument("--timeout", type=float, default=3600)
    download.set_defaults(handler=run_download)


def _client(args: argparse.Namespace) -> ServiceClient:
    return ServiceClient(args.url, args.api_key or os.environ.get("GISP_API_KEY"))


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _guarded(handler):  # type: ignore[no-untyped-def]
    """Turn server errors and unreachable servers into one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        import httpx

        try:
            return handler(args)
        except ServiceError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except httpx.HTTPError as error:
            print(f"error: cannot reach {args.url}: {error}", file=sys.stderr)
            return 2
        except TimeoutError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3

    run.__name__ = handler.__name__
    return run


@_guarded
def run_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    calibration: dict[str, Any] = {}
    if args.calibration_file:
        objective = getattr(args, "objective", "perplexity")
        calibration["set_id"] = client.upload_calibration(args.calibration_file, objective)["id"]
    elif args.calibration.startswith("cal_"):
        calibration["set_id"] = args.calibration
    else:
        calibration["name"] = args.calibration
    body: dict[str, Any] = {
        "model": {"id": args.model, "revision": args.revision},
        "calibration": calibration,
        **spec_values(args, JobSpec, skip=SUBMIT_OWN_FLAGS),
    }
    job = client.submit(body, args.idempotency_key)
    print(job["id"])
    if args.wait:
        job = client.wait(job["id"])
        return _report_end(job)
    return 0


def _report_end(job: dict[str, Any]) -> int:
    if job["status"] == "succeeded":
        print(f"{job['id']} succeeded: " + ", ".join(c["label"] for c in job["checkpoints"]))
        return 0
    error = job.get("error") or {}
    print(
        f"{job['id']} {job['status']}: {error.get('code', '')} {error.get('message', '')}".rstrip(),
        file=sys.stderr,
    )
    return 1


@_guarded
def run_status(args: argparse.Namespace) -> int:
    _print(_client(args).job(args.job_id))
    return 0


@_guarded
def run_wait(args: argparse.Namespace) -> int:
    return _report_end(_client(args).wait(args.job_id, timeout=args.timeout))


@_guarded
def run_events(args: argparse.Namespace) -> int:
    client = _client(args)
    cursor = None
    while True:
        events, next_cursor = client.events(args.job_id, cursor)
        for event in events:
            print(json.dumps(event))
            cursor = str(event["id"])
        if next_cursor:
            continue
        if not args.follow or client.job(args.job_id)["status"] in TERMINAL:
            return 0
        time.sleep(1.0)


@_guarded
def run_cancel(args: argparse.Namespace) -> int:
    print(_client(args).cancel(args.job_id)["status"])
    return 0


@_guarded
def run_list(args: argparse.Namespace) -> int:
    for job in _client(args).jobs(args.status):
        print(
            f"{job['id']}  {job['status']:<10}  step {job['progress']['step']}/{job['progress']['total_steps']}"
        )
    return 0


@_guarded
def run_download(args: argparse.Namespace) -> int:
    folder = _client(args).download(args.job_id, args.sparsity, args.out, timeout=args.timeout)
    print(folder)
    return 0
