"""Secured clients against real servers: Redis with a password and TLS, S3 over HTTPS.

The TLS stack (`LocalStack(tls=True)`) serves Redis on a TLS-only port and S3 on
HTTPS, with certificates from a CA made for the stack; kenpin reaches them from
settings alone (`KENPIN_REDIS_CA_FILE`, `KENPIN_S3_SECURE`, `KENPIN_S3_CA_FILE`).
Kafka stays plaintext: Tansu 0.6 serves neither TLS nor a SASL mechanism
kafka-python shares (tests/worker/test_kafka_security.py checks those options).
Wrong credentials, and TLS to a broker that does not speak it, end `kenpin-worker`
and `kenpin-trainer` with one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from urllib.parse import urlsplit

import pytest

from deploy.local.stack import LocalStack, StackSettings
from planes.control import ControlAccessDenied, ControlPlane
from planes.storage import ObjectStore, StoreAccessDenied
from schemas.control import WorkerHeartbeat
from worker.settings import WorkerSettings


@pytest.fixture(scope="module")
def tls_stack(local_stack, tmp_path_factory) -> Iterator[StackSettings]:
    """A second stack, TLS on (its binaries are checked by `local_stack`)."""
    stack = LocalStack(
        tmp_path_factory.mktemp("tls-stack"), tls=True, broker_storage="memory", stop_grace_s=0.5
    )
    with stack:
        yield stack.settings


def test_redis_and_s3_over_tls_verified_against_the_plants_ca(tls_stack):
    assert tls_stack.redis_url.startswith("rediss://") and tls_stack.s3_secure
    settings = _settings(tls_stack)
    control = ControlPlane.from_settings(settings)
    store = ObjectStore.from_settings(settings)
    assert control.check_access() and store.check_access()
    beat = WorkerHeartbeat(worker_id="tls-w", host="h", active_version="v1", time=_now())
    control.heartbeat(beat, ttl_s=30)
    assert [b.worker_id for b in control.heartbeats()] == ["tls-w"]
    store.put("tls-probe/hello.txt", b"over https")
    assert store.get("tls-probe/hello.txt") == b"over https"


def test_a_certificate_the_client_cannot_verify_is_refused_not_retried(tls_stack):
    # no CA file: the stack's CA is in no system bundle, so verification must fail
    settings = _settings(tls_stack, redis_ca_file=None, s3_ca_file=None)
    with pytest.raises(ControlAccessDenied, match="TLS"):
        ControlPlane.from_settings(settings).check_access()
    with pytest.raises(StoreAccessDenied, match="TLS"):
        ObjectStore.from_settings(settings).check_access()


def test_the_trainer_command_reaches_the_tls_stack_from_settings(tls_stack):
    result = _run([sys.executable, "-m", "trainer.cli", "workers"], tls_stack.env)
    assert result.returncode == 0, result.stderr


def test_a_wrong_redis_password_ends_the_worker_in_one_line(local_stack):
    url = urlsplit(local_stack.redis_url)
    env = local_stack.env | {
        "KENPIN_REDIS_URL": f"redis://{url.hostname}:{url.port}/0",
        "KENPIN_REDIS_PASSWORD": "not-the-password",
        "KENPIN_METRICS_PORT": "0",
    }
    result = _run([sys.executable, "-m", "worker.cli", "run"], env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis refused" in lines[0], result.stderr
    assert "not-the-password" not in result.stderr + result.stdout


def test_tls_to_a_plaintext_broker_ends_the_camera_in_one_line(local_stack, tmp_path):
    # the camera's first Kafka request fails the way `kenpin-worker run`'s does (same message)
    env = local_stack.env | {"KENPIN_KAFKA_SECURITY_PROTOCOL": "SSL"}  # Tansu: plaintext only
    argv = ["-m", "worker.cli", "camera", "--line", "tls-x", "--source", str(tmp_path)]
    result = _run([sys.executable, *argv], env)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Kafka broker answered" in lines[0], result.stderr[-3000:]


def test_wrong_s3_keys_and_two_redis_passwords_end_the_trainer_in_one_line(local_stack):
    wrong_s3 = local_stack.env | {"KENPIN_S3_SECRET_KEY": "not-the-secret"}
    result = _run([sys.executable, "-m", "trainer.cli", "workers"], wrong_s3)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "S3 refused the credentials" in lines[0], result.stderr

    both = local_stack.env | {"KENPIN_REDIS_PASSWORD": "a-second-one"}  # the URL has one
    result = _run([sys.executable, "-m", "trainer.cli", "workers"], both)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kenpin-trainer: invalid settings: settings: Value error, redis_url holds a password "
        "and KENPIN_REDIS_PASSWORD is set: give one"
    ]


def _settings(stack: StackSettings, **overrides: object) -> WorkerSettings:
    """The stack's settings (CA files included) as a worker reads them."""
    values = {k: v for k, v in asdict(stack).items() if v is not None}
    return WorkerSettings(**(values | overrides))


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KENPIN_")}
    return subprocess.run(
        argv,
        env=clean | env | {"KENPIN_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _now():
    from schemas.common import utc_now

    return utc_now()
