"""Object storage: multipart uploads with recorded sha256 on S3 (moto), and the local store's safety."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from core.storage import LocalStorage, ObjectNotFound


@pytest.mark.services
def test_s3_multipart_upload_roundtrip(service_settings, tmp_path: Path) -> None:
    from core.storage import S3Storage

    storage = S3Storage(service_settings)
    data = os.urandom(11 * 1024 * 1024)  # > the 5 MiB threshold: three parts
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    stored = storage.put_file("t/jobs/j/checkpoints/0.5000/model.safetensors", source)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data) == storage.size(stored.key)
    head = storage.client.head_object(Bucket=storage.bucket, Key=stored.key)
    assert head["ETag"].strip('"').endswith("-3")  # really uploaded in parts
    assert head["Metadata"]["sha256"] == stored.sha256
    assert b"".join(storage.iter_chunks(stored.key)) == data
    target = tmp_path / "back.bin"
    storage.download_file(stored.key, target)
    assert target.read_bytes() == data
    storage.delete_prefix("t/jobs/j")
    assert not storage.exists(stored.key)
    with pytest.raises(ObjectNotFound):
        storage.get_bytes(stored.key)


@pytest.mark.services
def test_presigned_url_is_sigv4_for_the_public_endpoint(service_settings) -> None:
    from core.storage import S3Storage

    internal = urlsplit(service_settings.s3_endpoint_url)
    assert internal.hostname == "127.0.0.1"
    # The same moto server under another name, standing for the address users reach (a proxy, a DNS name).
    public = f"http://localhost:{internal.port}"
    storage = S3Storage(service_settings.model_copy(update={"s3_public_endpoint_url": public}))
    data = os.urandom(4096)
    stored = storage.put_bytes("t/jobs/j/checkpoints/0.5000/config.json", data)
    url = storage.presigned_url(stored.key, 600)
    assert url is not None
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert (parts.scheme, parts.netloc) == ("http", f"localhost:{internal.port}")
    assert parts.path == f"/{storage.bucket}/{stored.key}"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-SignedHeaders"] == ["host"]
    assert query["X-Amz-Credential"][0].endswith(f"/{service_settings.s3_region}/s3/aws4_request")
    assert "Signature" not in query and "AWSAccessKeyId" not in query  # not SigV2
    fetched = httpx.get(url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == data
    # Without a public endpoint the URL names the endpoint the service itself uses.
    internal_url = S3Storage(service_settings).presigned_url(stored.key, 600)
    assert internal_url is not None and urlsplit(internal_url).netloc == internal.netloc


@pytest.mark.services
def test_create_bucket_provisions_once(service_settings, capsys: pytest.CaptureFixture[str]) -> None:
    from core.storage import S3Storage, StorageError, create_bucket

    settings = service_settings.model_copy(
        update={"s3_bucket": f"{service_settings.s3_bucket}-provisioned", "s3_create_bucket": False}
    )
    storage = S3Storage(settings)
    with pytest.raises(StorageError):
        storage.check()  # not there yet, and this store does not create it on first use
    create_bucket(settings)
    create_bucket(settings)
    assert capsys.readouterr().out.splitlines() == [
        f"bucket {settings.s3_bucket} created",
        f"bucket {settings.s3_bucket} exists",
    ]
    storage.check()
    assert storage.get_bytes(storage.put_bytes("t/x", b"ok").key) == b"ok"


def test_local_storage_roundtrip_and_key_safety(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    stored = storage.put_bytes("tenant/jobs/j/trajectory.json", b"{}")
    assert stored.sha256 == hashlib.sha256(b"{}").hexdigest()
    assert storage.get_bytes("tenant/jobs/j/trajectory.json") == b"{}"
    for key in ["../escape", "/etc/passwd", "a/../../b", ""]:
        with pytest.raises(ValueError):
            storage.put_bytes(key, b"x")
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("tenant/missing")
    storage.delete_prefix("tenant/jobs/j")
    assert not storage.exists("tenant/jobs/j/trajectory.json")
