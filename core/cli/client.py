"""``gisp jobs ...``: a client of any GISP server (``--url``, key from ``GISP_API_KEY``).

:class:`ServiceClient` is the reusable part; the ``run_*`` handlers are the command line around it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
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
WAITING_NOTE_EVERY_S = 30.0  # how often a download waiting on a checkpoint being built says so
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

    def follow(self, job_id: str, after: str | None = None, **retry: Any) -> Iterator[dict[str, Any] | None]:
        """The job's events as they happen, until its terminal state (``None`` on heartbeats)."""
        from core.cli.sse import follow_events

        return follow_events(self.http, job_id, after=after, check=self._check, **retry)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        progress: bool = True,
        max_retries: int = 8,
    ) -> dict:
        """Follow the job's event stream until it finishes, showing a progress bar over its steps.

        A dropped connection is resumed with Last-Event-ID (``max_retries`` consecutive failures at most).
        """
        from tqdm import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            # From the first event: a finished job's stream replays its history and ends at once.
            for event in self.follow(job_id, max_retries=max_retries):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still running after {timeout}s")
                if event is None or event["kind"] != "step":
                    continue
                data = event["data"]
                if progress and bar is None and data.get("total_steps"):
                    bar = tqdm(total=data["total_steps"], unit="step", desc=job_id[:12], file=sys.stderr)
                if bar is not None:
                    bar.n = data["step"]
                    loss = data.get("loss")
                    bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "-", refresh=False)
                    bar.refresh()
            return self.job(job_id)
        finally:
            if bar is not None:
                bar.close()

    def models(self) -> dict[str, Any]:
        return self._check(self.http.get("/v1/models")).json()

    def calibration_sets(self, objective: str | None = None) -> Iterator[dict[str, Any]]:
        """Named sets (kind "named") then the tenant's uploads (kind "upload"), all pages."""
        cursor = None
        while True:
            params = {k: v for k, v in {"objective": objective, "cursor": cursor}.items() if v}
            page = self._check(self.http.get("/v1/calibration-sets", params=params)).json()
            yield from ({"kind": "named", **named} for named in page["named"])
            yield from ({"kind": "upload", **upload} for upload in page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return

    def select(
        self, job_id: str, bounds: dict[str, float], *, verify: bool = False, timeout: float = 3600
    ) -> dict[str, Any]:
        """The point that meets ``bounds``; with ``verify``, re-measured by a worker (202 while it measures:
        polled after each Retry-After until ``timeout``)."""
        params: dict[str, Any] = dict(bounds) | ({"verify": "true"} if verify else {})
        deadline = time.monotonic() + timeout
        while True:
            response = self.http.get(f"/v1/jobs/{job_id}/select", params=params)
            if response.status_code != 202:
                return self._check(response).json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the selection was still being re-measured after {timeout}s")
            time.sleep(float(response.headers.get("Retry-After", "2")))

    def download(
        self,
        job_id: str,
        sparsity: float,
        out: Path,
        *,
        timeout: float = 3600,
        progress: bool = True,
        format: str = "tar",
        gguf_type: str | None = None,
        layout: str | None = None,
    ) -> Path:
        """Download (materialising on demand: 202 then poll) a checkpoint, checked against its sha256s.

        ``format="tar"``: the folder, extracted under ``out``. ``"gguf"``: one GGUF file, written to ``out`` if it
        ends in ``.gguf``, else into the folder ``out`` under the server's file name.
        """
        from tqdm import tqdm

        label = f"{round(sparsity, 4):.4f}"
        params = {"format": format, "type": gguf_type, "layout": layout}
        params = {k: v for k, v in params.items() if v is not None and not (k == "format" and v == "tar")}
        started = time.monotonic()
        deadline = started + timeout
        said = -math.inf
        while True:
            with self.http.stream(
                "GET", f"/v1/jobs/{job_id}/checkpoints/{label}", params=params, timeout=None
            ) as response:
                if response.status_code == 202:
                    now = time.monotonic()
                    if now > deadline:
                        raise TimeoutError(f"checkpoint {label} not ready after {timeout}s")
                    if (
                        progress and now - said >= WAITING_NOTE_EVERY_S
                    ):  # never silent while the server builds
                        waited = f" ({now - started:.0f} s so far)" if said > -math.inf else ""
                        print(f"checkpoint {label} is being built on the server{waited}", file=sys.stderr)
                        said = now
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
                    if format == "gguf":
                        return _write_checked(spool, out, response.headers)
                    return _extract_checked(spool, out)


def _write_checked(spool: Any, out: Path, headers: Any) -> Path:
    """A downloaded single file moved into place once its sha256 matches the one the server recorded."""
    name = headers.get("Content-Disposition", "").partition('filename="')[2].rstrip('"') or "model.gguf"
    target = out if out.suffix == ".gguf" else out / Path(name).name
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = target.with_name(f".{target.name}.partial")
    with partial.open("wb") as handle:
        for chunk in iter(lambda: spool.read(1 << 20), b""):
            digest.update(chunk)
            handle.write(chunk)
    if digest.hexdigest() != headers.get("X-Checksum-SHA256"):
        partial.unlink()
        raise ServiceError(0, "checksum_mismatch", f"{target.name} does not match its sha256")
    partial.replace(target)
    return target


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

BOUND_FLAGS = (
    ("--max-perplexity", "max_perplexity", "highest perplexity accepted"),
    ("--min-accuracy-ratio", "min_accuracy_ratio", "lowest accuracy / dense accuracy accepted"),
    ("--max-params", "max_params", "largest parameter count accepted"),
    ("--max-latency-ms", "max_latency_ms", "highest latency accepted (ms)"),
)


def _common_options() -> argparse.ArgumentParser:
    """Options every jobs command takes, before or after its name (``gisp jobs status J --url X`` works).

    Defaults are SUPPRESS, so a value given at either level survives; :func:`_option` applies the defaults.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"server URL (GISP_URL, default {DEFAULT_URL})"
    )
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (default: GISP_API_KEY)")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )
    return common


def _option(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    if value is not None:
        return value
    if name == "url":
        return os.environ.get("GISP_URL", DEFAULT_URL)
    if name == "api_key":
        return os.environ.get("GISP_API_KEY")
    return False


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    common = _common_options()
    jobs = subparsers.add_parser("jobs", help="submit and follow jobs on a GISP server", parents=[common])
    commands = jobs.add_subparsers(dest="jobs_command", required=True)

    def command(name: str, handler: Any, text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=text, description=text, parents=[common])
        parser.set_defaults(handler=handler)
        return parser

    submit = command("submit", run_submit, "submit a pruning job")
    submit.add_argument(
        "--model", required=True, help="hub id org/name or local/<name> (see `gisp jobs models`)"
    )
    submit.add_argument("--revision")
    source = submit.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--calibration", help="named set (wikitext2, c4, ...) or an uploaded set id (cal_...)"
    )
    source.add_argument("--calibration-file", type=Path, help="upload this file (text or JSONL) first")
    add_spec_flags(submit, JobSpec, skip=SUBMIT_OWN_FLAGS)
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="follow the job until it finishes")

    command("status", run_status, "show a job").add_argument("job_id")
    wait = command("wait", run_wait, "follow a job's live events until it finishes (progress bar)")
    wait.add_argument("job_id")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds (exit status 3)")
    wait.add_argument("--retries", type=int, default=8, help="reconnections in a row before giving up")
    events = command("events", run_events, "print a job's events")
    events.add_argument("job_id")
    events.add_argument("--follow", action="store_true", help="keep printing live events until the job ends")
    command("cancel", run_cancel, "cancel a job").add_argument("job_id")
    command("list", run_list, "list jobs").add_argument("--status")
    command("models", run_models, "list the models this server offers")
    sets = command("calibration-sets", run_calibration_sets, "list named and uploaded calibration sets")
    sets.add_argument("--objective")

    download = command("download", run_download, "download a checkpoint (materialised on demand)")
    download.add_argument("job_id")
    download.add_argument("--sparsity", type=float, required=True)
    download.add_argument("--out", type=Path, required=True)
    download.add_argument("--timeout", type=float, default=3600)
    download.add_argument(
        "--format",
        default="tar",
        choices=["tar", "gguf"],
        help="tar: the folder; gguf: one file for llama.cpp",
    )
    download.add_argument("--type", choices=["f32", "f16", "q8_0"], help="GGUF weight type (default f16)")
    download.add_argument(
        "--layout", choices=["nonuniform", "uniform"], help="default: the job's; the other is built on demand"
    )

    select = command(
        "select", run_select, "choose the checkpoint on a finished job's curve that meets bounds"
    )
    select.add_argument("job_id")
    for flag, dest, text in BOUND_FLAGS:
        select.add_argument(flag, dest=dest, type=float, help=text)
    select.add_argument(
        "--verify",
        action="store_true",
        help="re-measure the chosen checkpoint on a worker, stepping back until the bounds hold",
    )
    select.add_argument(
        "--download", type=Path, metavar="DIR", help="download the chosen checkpoint into DIR"
    )
    select.add_argument("--timeout", type=float, default=3600, help="for --verify and --download, each")


def _client(args: argparse.Namespace) -> ServiceClient:
    return ServiceClient(_option(args, "url"), _option(args, "api_key"))


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _guarded(handler):  # type: ignore[no-untyped-def]
    """Every failure is one line on stderr (never a traceback): exit 2, or 3 for a timeout."""

    def run(args: argparse.Namespace) -> int:
        import httpx

        from core.cli.sse import StreamLost

        url = _option(args, "url")
        try:
            return handler(args)
        except ServiceError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except StreamLost as error:
            print(f"error: {url}: {error}", file=sys.stderr)
            return 2
        except httpx.HTTPError as error:
            print(f"error: cannot reach {url}: {error or type(error).__name__}", file=sys.stderr)
            return 2
        except TimeoutError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # a bug, or an answer this client does not understand: still one line
            print(f"error: unexpected {type(error).__name__}: {error}", file=sys.stderr)
            return 2

    run.__name__ = handler.__name__
    return run


def _one_line(job: dict[str, Any]) -> str:
    progress = job["progress"]
    parts = [job["id"], job["status"]]
    if progress.get("total_steps"):
        parts.append(f"step {progress['step']}/{progress['total_steps']}")
    if progress.get("current_sparsity") is not None:
        parts.append(f"sparsity {progress['current_sparsity']:.4f}")
    if progress.get("calibration_loss") is not None:
        parts.append(f"loss {progress['calibration_loss']:.4f}")
    if progress.get("eta_seconds") and job["status"] == "running":
        parts.append(f"ETA {progress['eta_seconds']:.0f}s")
    if job.get("error"):
        parts.append(f"{job['error']['code']}: {job['error']['message']}")
    return "  ".join(parts)


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
    as_json = _option(args, "json")
    if not as_json:
        print(job["id"])
    if args.wait:
        job = client.wait(job["id"], progress=not as_json)
        return _report_end(job, as_json)
    if as_json:
        _print(job)
    return 0


def _report_end(job: dict[str, Any], as_json: bool = False) -> int:
    if as_json:
        _print(job)
    elif job["status"] == "succeeded":
        print(f"{job['id']} succeeded: " + ", ".join(c["label"] for c in job["checkpoints"]))
    else:
        error = job.get("error") or {}
        print(
            f"{job['id']} {job['status']}: {error.get('code', '')} {error.get('message', '')}".rstrip(),
            file=sys.stderr,
        )
    return 0 if job["status"] == "succeeded" else 1


@_guarded
def run_status(args: argparse.Namespace) -> int:
    job = _client(args).job(args.job_id)
    if _option(args, "json"):
        _print(job)
    else:
        print(_one_line(job))
    return 0


@_guarded
def run_wait(args: argparse.Namespace) -> int:
    as_json = _option(args, "json")
    job = _client(args).wait(
        args.job_id, timeout=args.timeout, progress=not as_json, max_retries=args.retries
    )
    return _report_end(job, as_json)


def _event_line(event: dict[str, Any]) -> str:
    data = event["data"]
    if event["kind"] == "step":
        loss = data.get("loss")
        detail = f"step {data['step']}/{data['total_steps']}  sparsity {data['sparsity']:.4f}  loss " + (
            f"{loss:.4f}" if loss is not None else "-"
        )
    elif event["kind"] == "state":
        detail = data.get("status", "") + (f"  ({data['reason']})" if data.get("reason") else "")
        if data.get("error"):
            detail += f"  {data['error'].get('code')}: {data['error'].get('message')}"
    else:
        detail = "  ".join(f"{k}={v}" for k, v in data.items())
    return f"{event['id']}  {event['created_at']}  {event['kind']:<10}  {detail}"


@_guarded
def run_events(args: argparse.Namespace) -> int:
    client = _client(args)
    as_json = _option(args, "json")

    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event) if as_json else _event_line(event), flush=True)

    if args.follow:
        for event in client.follow(args.job_id):
            if event is not None:
                show(event)
        return 0
    cursor = None
    while True:
        events, cursor = client.events(args.job_id, cursor)
        for event in events:
            show(event)
        if not cursor:
            return 0


@_guarded
def run_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job_id)
    if _option(args, "json"):
        _print(job)
    else:
        print(job["status"])
    return 0


@_guarded
def run_list(args: argparse.Namespace) -> int:
    jobs = _client(args).jobs(args.status)
    if _option(args, "json"):
        _print(list(jobs))
        return 0
    for job in jobs:
        progress = job["progress"]
        print(f"{job['id']}  {job['status']:<10}  step {progress['step']}/{progress['total_steps']}")
    return 0


@_guarded
def run_models(args: argparse.Namespace) -> int:
    listing = _client(args).models()
    if _option(args, "json"):
        _print(listing)
        return 0
    for model in listing["data"]:
        parameters = f"{model['parameters']:,}" if model["parameters"] is not None else "?"
        print(
            f"{model['id']}  {model['family'] or '?'}  {parameters} parameters  {model['size_bytes']:,} bytes"
        )
    if listing["hub_models_allowed"]:
        print("hub models (org/name) are allowed too")
    return 0


@_guarded
def run_calibration_sets(args: argparse.Namespace) -> int:
    sets = list(_client(args).calibration_sets(args.objective))
    if _option(args, "json"):
        _print(sets)
        return 0
    for item in sets:
        if item["kind"] == "named":
            print(f"{item['name']}  {item['objective']}  (named)")
        else:
            print(
                f"{item['id']}  {item['objective']}  {item['item_count']} items  {item.get('name') or ''}".rstrip()
            )
    return 0


@_guarded
def run_download(args: argparse.Namespace) -> int:
    if args.type is not None and args.format != "gguf":
        raise ServiceError(0, "validation_error", "--type applies to --format gguf only")
    folder = _client(args).download(
        args.job_id,
        args.sparsity,
        args.out,
        timeout=args.timeout,
        progress=not _option(args, "json"),
        format=args.format,
        gguf_type=args.type,
        layout=args.layout,
    )
    if _option(args, "json"):
        _print({"path": str(folder), "sparsity": args.sparsity})
    else:
        print(folder)
    return 0


@_guarded
def run_select(args: argparse.Namespace) -> int:
    bounds = {dest: getattr(args, dest) for _, dest, _ in BOUND_FLAGS if getattr(args, dest) is not None}
    if not bounds:
        flags = ", ".join(flag for flag, _, _ in BOUND_FLAGS)
        print(f"error: give at least one bound ({flags})", file=sys.stderr)
        return 2
    client = _client(args)
    chosen = client.select(args.job_id, bounds, verify=args.verify, timeout=args.timeout)
    as_json = _option(args, "json")
    if args.download is not None:
        folder = client.download(
            args.job_id, chosen["sparsity"], args.download, timeout=args.timeout, progress=not as_json
        )
        chosen["path"] = str(folder)
    if as_json:
        _print(chosen)
        return 0
    figures = chosen["figures"]
    shown = [
        f"{name} {figures[name]:.4g}"
        for name in ("perplexity", "accuracy_ratio", "latency_ms")
        if figures.get(name) is not None
    ]
    print(
        f"{chosen['label']}  parameters {figures['parameters']:,}  "
        + "  ".join(shown)
        + f"  ({chosen['rule']})"
    )
    for tried in (chosen.get("verification") or {}).get("tried", []):
        curve, measured = tried["curve"]["perplexity"], tried["measured"]["perplexity"]
        print(
            f"  {tried['label']}  perplexity curve {_figure(curve)}  re-measured {_figure(measured)}"
            f"  {'meets' if tried['meets'] else 'misses'}"
        )
    if "path" in chosen:
        print(chosen["path"])
    return 0


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
