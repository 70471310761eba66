"""Object storage behind one small interface: S3 (MinIO, moto, AWS) or a local folder for the embedded mode.

Keys follow one layout (see the ``*_key`` helpers) so every artifact of a tenant lives under its prefix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from core.settings import Settings, get_settings

CHUNK = 1024 * 1024


class StorageError(Exception):
    """Storage could not be reached or answered an error; worth retrying."""


class ObjectNotFound(StorageError):
    """The key does not exist (not worth retrying)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


# --- key layout ---


def job_prefix(tenant_id: str, job_id: str) -> str:
    return f"{tenant_id}/jobs/{job_id}"


def calibration_key(tenant_id: str, set_id: str) -> str:
    return f"{tenant_id}/calibration/{set_id}/data.jsonl"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Storage(Protocol):
    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> StoredObject: ...

    def put_file(self, key: str, path: Path) -> StoredObject:
        """Upload a file (multipart when large); returns its size and sha256."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def download_file(self, key: str, path: Path) -> None: ...

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def check(self) -> None:
        """Raise StorageError when the store is not usable (readiness probe)."""
        ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A time-limited GET URL for the object, or None when the store cannot make one."""
        ...


class LocalStorage:
    """Objects as files under one folder; writes are atomic renames so readers never see half a file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if pure.is_absolute() or ".." in pure.parts or not key:
            raise ValueError(f"invalid storage key {key!r}")
        return self.root.joinpath(*pure.parts)

    def _write(self, key: str, source: Path | bytes) -> StoredObject:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            if isinstance(source, bytes):
                out.write(source)
                digest.update(source)
                size = len(source)
            else:
                with source.open("rb") as handle:
                    while chunk := handle.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> StoredObject:
        return self._write(key, data)

    def put_file(self, key: str, path: Path) -> StoredObject:
        return self._write(key, Path(path))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def download_file(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None


class S3Storage:
    """S3-compatible storage through boto3; large files go up in parts (TransferConfig)."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        # SigV4 everywhere: botocore would otherwise presign with SigV2, which newer stores and regions refuse.
        # Path-style addressing on a custom endpoint: MinIO serves buckets as paths unless given a domain.
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=min(5.0, settings.s3_timeout_s),
            read_timeout=settings.s3_timeout_s,
            max_pool_connections=50,
        )
        credentials = {
            "region_name": settings.s3_region,
            "aws_access_key_id": settings.s3_access_key.get_secret_value(),
            "aws_secret_access_key": settings.s3_secret_key.get_secret_value(),
        }
        self.client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, config=config, **credentials)
        # A SigV4 URL is signed for one host: the one the client will connect to, which inside a deployment
        # (e.g. http://minio:9000) is rarely the one users reach. This client only signs; it never connects.
        public = settings.s3_public_endpoint_url
        self.presign_client = (
            boto3.client("s3", endpoint_url=public, config=config, **credentials) if public else self.client
        )
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold_bytes,
            multipart_chunksize=settings.multipart_chunk_bytes,
        )
        self._bucket_checked = not settings.s3_create_bucket

    def _call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        from botocore.exceptions import BotoCoreError, ClientError

        self._ensure_bucket()
        try:
            return fn(*args, **kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise ObjectNotFound(str(kwargs.get("Key", args[1] if len(args) > 1 else ""))) from None
            raise StorageError(f"storage error {code}: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"storage unreachable: {error}") from error

    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        self.create_bucket()
        self._bucket_checked = True

    def create_bucket(self) -> bool:
        """Create the bucket unless it exists; True when this call created it."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError:
            pass  # missing (404), or not visible to these keys: creating it answers which
        except BotoCoreError as error:
            raise StorageError(f"storage unreachable: {error}") from error
        region = self.client.meta.region_name
        where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            self.client.create_bucket(Bucket=self.bucket, **where)
        except ClientError as error:
            if "BucketAlready" not in str(error):
                raise StorageError(str(error)) from error
            return False
        except BotoCoreError as error:
            raise StorageError(f"storage unreachable: {error}") from error
        return True

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> StoredObject:
        digest = hashlib.sha256(data).hexdigest()
        self._call(
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata={"sha256": digest},
        )
        return StoredObject(key=key, size=len(data), sha256=digest)

    def put_file(self, key: str, path: Path) -> StoredObject:
        path = Path(path)
        digest = sha256_file(path)
        self._call(
            self.client.upload_file,
            str(path),
            self.bucket,
            key,
            ExtraArgs={"Metadata": {"sha256": digest}},
            Config=self.transfer,
        )
        return StoredObject(key=key, size=path.stat().st_size, sha256=digest)

    def get_bytes(self, key: str) -> bytes:
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        return response["Body"].read()

    def download_file(self, key: str, path: Path) -> None:
        self._call(self.client.download_file, self.bucket, key, str(path), Config=self.transfer)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def size(self, key: str) -> int:
        return int(self._call(self.client.head_object, Bucket=self.bucket, Key=key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in self._call(paginator.paginate, Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self._call(self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": keys})

    def check(self) -> None:
        self._call(self.client.head_bucket, Bucket=self.bucket)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return self._call(
            self.presign_client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires_s,
        )


_STORAGES: dict[tuple[str, str, str, str], Storage] = {}


def get_storage(settings: Settings | None = None) -> Storage:
    """The process's storage client for these settings (boto3 clients are thread-safe and reused)."""
    settings = settings or get_settings()
    cache_key = (
        settings.storage_backend,
        str(settings.storage_dir) if settings.storage_backend == "local" else settings.s3_endpoint_url or "",
        settings.s3_bucket,
        settings.s3_public_endpoint_url or "",
    )
    storage = _STORAGES.get(cache_key)
    if storage is None:
        storage = (
            LocalStorage(settings.storage_dir) if settings.storage_backend == "local" else S3Storage(settings)
        )
        _STORAGES[cache_key] = storage
    return storage


def create_bucket(settings: Settings | None = None) -> None:
    """Provision the deployment's bucket (the compose file's one-off step); prints what it did."""
    settings = settings or get_settings()
    created = S3Storage(settings).create_bucket()
    print(f"bucket {settings.s3_bucket} {'created' if created else 'exists'}")
