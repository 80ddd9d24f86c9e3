"""Readiness checks: a server is ready when a real client request succeeds.

An open port is not enough: SeaweedFS accepts S3 connections before its volume
server has registered, and Tansu answers before its S3 storage is reachable.
So each probe does what kenpin will do first (write an object, read cluster
metadata, PING) and retries until a deadline. A failure names the server, the
last client error and the tail of the server's log, because that log is
almost always where the reason is.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from .processes import ServerProcess, is_alive, tail

__all__ = ["StackStartError", "probe_kafka", "probe_redis", "probe_s3", "wait_until_ready"]

log = logging.getLogger(__name__)


class StackStartError(RuntimeError):
    """A server of the local stack did not come up."""


def wait_until_ready(
    server: ServerProcess,
    address: str,
    probe: Callable[[], None],
    timeout_s: float,
    interval_s: float = 0.25,
) -> float:
    """Call *probe* until it returns without raising; returns the seconds it took.

    Gives up early when the server process has exited, since no retry can
    succeed then.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - any client error means "not yet"
            last_error = exc
        else:
            elapsed = time.monotonic() - start
            log.info("%s ready on %s after %.1f s", server.name, address, elapsed)
            return elapsed
        if not is_alive(server):
            reason = "exited before it answered"
            break
        if time.monotonic() >= deadline:
            reason = f"did not answer within {timeout_s:.0f} s"
            break
        time.sleep(interval_s)
    raise StackStartError(
        f"{server.name} (pid {server.pid}) on {address} {reason}; "
        f"last error: {last_error!r}\n"
        f"--- last lines of {server.log} ---\n{tail(server.log)}"
    )


def probe_s3(
    endpoint: str, access_key: str, secret_key: str, buckets: list[str], ca_file: str | None = None
) -> Callable[[], None]:
    """List buckets, create the missing ones and write/delete a probe object in each.

    The write proves the whole path (S3 gateway -> filer -> volume server) works,
    which a bucket listing alone does not.
    """
    import urllib3
    from minio import Minio

    # No urllib3 retries: the loop in wait_until_ready retries, without back-off
    # and without a warning per refused connection.
    # With a CA file, the stack serves S3 over HTTPS (`kenpin-stack up --tls`).
    tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file} if ca_file else {}
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=10), retries=False, **tls)
    client = Minio(
        endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=ca_file is not None,
        http_client=http,
    )

    def probe() -> None:
        existing = {bucket.name for bucket in client.list_buckets()}
        for bucket in buckets:
            if bucket not in existing:
                client.make_bucket(bucket)
            client.put_object(bucket, ".kenpin-stack-probe", io.BytesIO(b"ok"), 2)
            client.remove_object(bucket, ".kenpin-stack-probe")

    return probe


def probe_kafka(bootstrap: str) -> Callable[[], None]:
    """A metadata request through a plain consumer (which also negotiates API versions).

    Not the admin client's list_topics: kafka-python 2.x cannot parse the
    authorised-operations field Tansu returns there.
    """
    from kafka import KafkaConsumer

    def probe() -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="kenpin-stack-probe",
            request_timeout_ms=5000,
        )
        try:
            consumer.topics()
        finally:
            consumer.close()

    return probe


def probe_redis(url: str, ca_file: str | None = None) -> Callable[[], None]:
    """PING, authenticated with the stack's password (over TLS for a rediss:// URL)."""
    import redis

    tls = {"ssl_ca_certs": ca_file} if ca_file else {}

    def probe() -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, **tls)
        try:
            if not client.ping():
                raise RuntimeError("PING did not return PONG")
        finally:
            client.close()

    return probe
