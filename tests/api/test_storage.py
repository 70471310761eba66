"""Object storage: multipart uploads with recorded sha256 on S3 (moto), and the local store's safety."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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
