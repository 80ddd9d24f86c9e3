"""The blob plane: the one module that opens S3 connections (MinIO client).

Heatmaps, frames of flagged parts, model artifacts and normal samples all live
in one bucket. Keeping the client here means credentials, TLS and retries are
decided once, and tests can hand `ObjectStore` an in-process fake client.

Works with any S3-compatible server (MinIO, SeaweedFS, AWS S3).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Protocol

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error
from pydantic import SecretStr

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


class S3Settings(Protocol):
    """The settings this module reads; WorkerSettings and the trainer's settings both fit."""

    s3_endpoint: str
    s3_access_key: SecretStr
    s3_secret_key: SecretStr
    s3_bucket: str
    s3_secure: bool


def make_s3_client(settings: S3Settings) -> Minio:
    """A MinIO client for the configured endpoint; empty credentials mean anonymous access.

    No request is made here: the client connects lazily, on the first call.
    """
    access_key = settings.s3_access_key.get_secret_value() or None
    secret_key = settings.s3_secret_key.get_secret_value() or None
    return Minio(
        settings.s3_endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=settings.s3_secure,
        http_client=_http_client(),
    )


def _http_client() -> urllib3.PoolManager:
    """MinIO's own pool, with timeouts a worker can live with.

    MinIO waits 5 minutes for a connect or a read by default: an S3 server that
    hangs (not down: it accepts and never answers) would hold a heatmap thread and
    a shutdown that long. Callers retry on their own (the heatmap backlog), so a
    short attempt with few retries is the better unit.
    """
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


@dataclass(frozen=True)
class StoredObject:
    """One listed object: enough to fingerprint a set of objects without reading them."""

    key: str
    size: int
    etag: str


class ObjectStore:
    """Bytes in and out of one bucket, with content types so a browser shows a PNG as a PNG."""

    def __init__(self, client: Minio, bucket: str):
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: S3Settings) -> ObjectStore:
        return cls(make_s3_client(settings), settings.s3_bucket)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist; safe when several workers start at once."""
        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:
            # Another worker created it between our check and our request.
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Store `data` under `key`, replacing any object there (replays overwrite).

        `metadata` becomes S3 user metadata (`x-amz-meta-*`), e.g. the product of a frame.
        """
        self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            length=len(data),
            content_type=content_type,
            metadata=metadata or None,
        )

    def metadata(self, key: str) -> dict[str, str]:
        """The user metadata of `key`, names lower-cased without `x-amz-meta-`."""
        stat = self.client.stat_object(self.bucket, key)
        prefix = "x-amz-meta-"
        return {
            k.lower().removeprefix(prefix): v
            for k, v in (stat.metadata or {}).items()
            if k.lower().startswith(prefix)
        }

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises minio's S3Error (code NoSuchKey) if absent."""
        response = self.client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with `prefix` (recursively), sorted by key."""
        found = [
            StoredObject(obj.object_name, int(obj.size or 0), (obj.etag or "").strip('"'))
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if not obj.is_dir
        ]
        return sorted(found, key=lambda o: o.key)
