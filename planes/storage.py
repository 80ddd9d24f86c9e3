"""The blob plane: the one module that opens S3 connections (MinIO client).

Heatmaps, frames of flagged parts, model artifacts and normal samples all live
in one bucket. Keeping the client here means credentials, TLS and retries are
decided once, and tests can hand `ObjectStore` an in-process fake client. How
long heatmaps, originals and normals are kept is the bucket's own lifecycle
rules (`retention_rules`), so S3 deletes them, not a kenpin process.

Works with any S3-compatible server (MinIO, SeaweedFS, AWS S3).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, AndOperator, Filter, Tags
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from planes.settings import S3Settings
from schemas.object_layout import KIND_PREFIXES, ObjectKind, object_kind

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound")
_BUCKET_TAKEN = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


#: S3 error codes that mean "these credentials are not welcome here": a configuration
#: error, reported at start in one line instead of retried for ever.
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
)
#: The object tag that lifecycle rules select on (see `retention_rules`).
KIND_TAG = "kenpin-kind"


class StoreAccessDenied(RuntimeError):
    """S3 refused kenpin's credentials or certificate: no retry helps."""


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
        http_client=_http_client(settings.s3_ca_file),
    )


def _http_client(ca_file: Path | None = None) -> urllib3.PoolManager:
    """MinIO's own pool, with timeouts a worker can live with, verifying certificates.

    MinIO waits 5 minutes for a connect or a read by default: an S3 server that
    hangs (not down: it accepts and never answers) would hold a heatmap thread and
    a shutdown that long. Callers retry on their own (the heatmap backlog), so a
    short attempt with few retries is the better unit. A plant's own CA (a MinIO
    with an in-house certificate) comes from `s3_ca_file`.
    """
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(ca_file) if ca_file else os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


@dataclass(frozen=True)
class StoredObject:
    """One listed object: enough to fingerprint a set of objects without reading them."""

    key: str
    size: int
    etag: str


class ObjectStore:
    """Bytes in and out of one bucket, with content types so a browser shows a PNG as a PNG.

    `on_error(operation)` is called for every failed request (a missing key asked
    about by `exists` is an answer, not a failure): the worker counts them in
    `kenpin_s3_errors_total{operation}`, so a failing S3 shows before a backlog does.
    """

    def __init__(
        self, client: Minio, bucket: str, on_error: Callable[[str], None] | None = None
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.on_error = on_error

    @classmethod
    def from_settings(cls, settings: S3Settings) -> ObjectStore:
        return cls(make_s3_client(settings), settings.s3_bucket)

    @contextmanager
    def _request(self, operation: str, expected: Collection[str] = ()) -> Iterator[None]:
        try:
            yield
        except S3Error as exc:
            if exc.code not in expected and self.on_error is not None:
                self.on_error(operation)
            raise
        except Exception:
            if self.on_error is not None:
                self.on_error(operation)
            raise

    def check_access(self) -> bool:
        """Whether the bucket answers now; False when S3 cannot be reached (an outage).

        Raises `StoreAccessDenied` when S3 answers but refuses kenpin (wrong keys,
        a certificate that does not verify): a process stops at start and says so.
        """
        try:
            with _quiet_retries():  # an outage is an answer here, not a warning per retry
                self.client.bucket_exists(self.bucket)
        except S3Error as exc:
            if exc.code in ACCESS_DENIED_CODES:
                raise StoreAccessDenied(
                    f"S3 refused the credentials (KENPIN_S3_ACCESS_KEY / KENPIN_S3_SECRET_KEY) "
                    f"for bucket {self.bucket!r}: {exc.code}"
                ) from exc
            raise
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.SSLError):
                raise StoreAccessDenied(f"TLS to S3 failed: {exc.reason}") from exc
            return False
        except urllib3.exceptions.SSLError as exc:
            raise StoreAccessDenied(f"TLS to S3 failed: {exc}") from exc
        except urllib3.exceptions.HTTPError:
            return False
        return True

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist; safe when several workers start at once."""
        with self._request("bucket"):
            if self.client.bucket_exists(self.bucket):
                return
        with self._request("bucket", expected=_BUCKET_TAKEN):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                # Another worker created it between our check and our request.
                if exc.code not in _BUCKET_TAKEN:
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
        A heatmap, original or normal is tagged with its kind (`kenpin-kind`), which
        the retention rules select on.
        """
        kind = object_kind(key)
        extra: dict[str, Any] = {}
        if kind is not None:
            tags = Tags.new_object_tags()
            tags[KIND_TAG] = kind
            extra["tags"] = tags
        with self._request("put"):
            self.client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                length=len(data),
                content_type=content_type,
                metadata=metadata or None,
                **extra,
            )

    def metadata(self, key: str) -> dict[str, str]:
        """The user metadata of `key`, names lower-cased without `x-amz-meta-`."""
        with self._request("stat"):
            stat = self.client.stat_object(self.bucket, key)
        prefix = "x-amz-meta-"
        return {
            k.lower().removeprefix(prefix): v
            for k, v in (stat.metadata or {}).items()
            if k.lower().startswith(prefix)
        }

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises minio's S3Error (code NoSuchKey) if absent."""
        with self._request("get"):
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        with self._request("stat", expected=_MISSING):
            try:
                self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING:
                    return False
                raise
        return True

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with `prefix` (recursively), sorted by key."""
        with self._request("list"):
            found = [
                StoredObject(obj.object_name, int(obj.size or 0), (obj.etag or "").strip('"'))
                for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if not obj.is_dir
            ]
        return sorted(found, key=lambda o: o.key)

    # --- retention -----------------------------------------------------------------

    def set_retention(self, days: Mapping[ObjectKind, int]) -> LifecycleConfig | None:
        """Apply `retention_rules(days)` to the bucket (replacing its lifecycle rules).

        Every kind kept for ever (all 0) removes the bucket's lifecycle configuration.
        Returns what was set. Idempotent: run it at every start.
        """
        config = retention_rules(days)
        with self._request("lifecycle"):
            if config is None:
                self.client.delete_bucket_lifecycle(self.bucket)
            else:
                self.client.set_bucket_lifecycle(self.bucket, config)
        return config

    def retention(self) -> LifecycleConfig | None:
        """The bucket's lifecycle rules as the server holds them (None: none)."""
        with self._request("lifecycle"):
            return self.client.get_bucket_lifecycle(self.bucket)


@contextmanager
def _quiet_retries() -> Iterator[None]:
    pool_log = logging.getLogger("urllib3.connectionpool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool_log.setLevel(level)


def retention_rules(days: Mapping[ObjectKind, int]) -> LifecycleConfig | None:
    """S3 lifecycle rules expiring each kind of object `days[kind]` days after it was written.

    One rule per kind, selecting on the kind's prefix and its `kenpin-kind` tag
    (heatmaps and originals share a prefix); a kind with 0 days has no rule and is
    kept. Releases (`models/`) are never expired: rollback needs them. Objects
    stored before tagging have no tag and are kept.
    """
    rules = []
    for kind, kept in sorted(days.items()):
        if kept < 0:
            raise ValueError(f"retention of {kind} must be >= 0 days (0: keep), got {kept}")
        if kept == 0:
            continue
        tags = Tags.new_bucket_tags()  # a filter's tags: the bucket kind allows 50
        tags[KIND_TAG] = kind
        rules.append(
            Rule(
                ENABLED,
                rule_filter=Filter(and_operator=AndOperator(prefix=KIND_PREFIXES[kind], tags=tags)),
                rule_id=f"kenpin-{kind}-retention",
                expiration=Expiration(days=kept),
            )
        )
    return LifecycleConfig(rules) if rules else None
