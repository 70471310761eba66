"""Bodies are limited as they stream in, on a real server socket: the 413 comes while the client still sends.

Each chunked request below crosses the limit and then stops sending without ending its body. A server that
counted only Content-Length (or read the whole body before checking) would wait for the rest, and the read
here would time out instead of finding the 413.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from api.limits import ENVELOPE_BYTES

pytestmark = pytest.mark.services

MAX_UPLOAD = 64 * 1024
MAX_REQUEST = 8 * 1024


@pytest.fixture(scope="module")
def server(live_server, make_key, tiny_model: str) -> Iterator[tuple[str, int, str]]:  # type: ignore[no-untyped-def]
    url = urlsplit(live_server(max_upload_bytes=MAX_UPLOAD, max_request_bytes=MAX_REQUEST))
    yield url.hostname or "127.0.0.1", url.port or 80, make_key("limits")


def _open(server: tuple[str, int, str], path: str, headers: dict[str, str]) -> socket.socket:
    host, port, key = server
    sock = socket.create_connection((host, port), timeout=10)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Authorization: Bearer {key}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _send_chunks(sock: socket.socket, total: int, size: int = 4096, first: bytes = b"") -> None:
    """``first`` then ``total`` bytes in chunks, stopping early if the server already answered and closed."""
    sent = 0
    while sent < total:
        chunk = first + b"x" * size if sent == 0 else b"x" * size
        try:
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        sent += size


def _response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the answer; the body was left unfinished, so a late server times out here."""
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_chunked_upload_is_cut_off_at_the_limit(server) -> None:  # type: ignore[no-untyped-def]
    sock = _open(
        server,
        "/v1/calibration-sets",
        {"Content-Type": "multipart/form-data; boundary=b", "Transfer-Encoding": "chunked"},
    )
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    _send_chunks(sock, 2 * (MAX_UPLOAD + ENVELOPE_BYTES), first=part)  # twice the limit; it never ends
    status, body = _response(sock)
    assert status == 413, body
    assert body["error"]["field"] == "file"


def test_chunked_job_body_is_cut_off_at_the_limit(server) -> None:  # type: ignore[no-untyped-def]
    sock = _open(server, "/v1/jobs", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    _send_chunks(sock, 4 * MAX_REQUEST)
    status, body = _response(sock)
    assert status == 413, body
    assert body["error"] == {
        "code": "payload_too_large",
        "message": f"the request body exceeds {MAX_REQUEST} bytes",
        "field": "body",
    }


def test_declared_length_over_the_limit_is_refused_before_the_body(server) -> None:  # type: ignore[no-untyped-def]
    sock = _open(
        server, "/v1/jobs", {"Content-Type": "application/json", "Content-Length": str(MAX_REQUEST + 1)}
    )
    status, body = _response(sock)  # not a byte of the body was sent
    assert status == 413, body


def test_bodies_within_the_limit_pass(server) -> None:  # type: ignore[no-untyped-def]
    import httpx

    host, port, key = server
    job = {
        "model": {"id": "local/tiny"},
        "calibration": {"name": "wikitext2"},
        "samples": 4,
        "seq_len": 32,
        "sparsities": [0.2],
        "steps": 2,
        "metadata": {"note": "n" * 4000},
    }

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it streams, and under the limit
        yield json.dumps(job).encode()

    with httpx.Client(base_url=f"http://{host}:{port}", headers={"Authorization": f"Bearer {key}"}) as client:
        answer = client.post("/v1/jobs", content=chunked(), headers={"Content-Type": "application/json"})
        assert answer.status_code == 201, answer.text
        upload = client.post(
            "/v1/calibration-sets",
            files={"file": ("cal.txt", b"calibration text " * 3000)},  # 51 KB, under 64 KiB
            data={"objective": "perplexity"},
        )
        assert upload.status_code == 201, upload.text
