"""The local stack's servers do what kenpin relies on, against the real servers.

Tansu quirks (0.6.0) are handled here, not in product code: a group join takes
about half the session timeout (short ``session_timeout_ms``), a group can stay
stuck after a consumer leaves during a rebalance (unique group ids), and end
offsets understate the log end (committed offsets are checked against what was
consumed, never against ``end_offsets``).
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from minio import Minio

from deploy.local.stack import LocalStack, StackSettings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _minio(settings: StackSettings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
    )


def test_settings_are_the_kenpin_environment(local_stack: StackSettings) -> None:
    env = local_stack.env
    assert set(env) == {
        "KENPIN_KAFKA_BOOTSTRAP",
        "KENPIN_REDIS_URL",
        "KENPIN_S3_ENDPOINT",
        "KENPIN_S3_ACCESS_KEY",
        "KENPIN_S3_SECRET_KEY",
        "KENPIN_S3_BUCKET",
        "KENPIN_S3_SECURE",
    }
    assert env["KENPIN_S3_SECURE"] == "false"
    assert env["KENPIN_KAFKA_BOOTSTRAP"].startswith("127.0.0.1:")
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in local_stack.export_lines().splitlines()
    )
    assert exported == env


def test_kafka_produce_then_consume_and_commit_in_a_group(local_stack: StackSettings) -> None:
    bootstrap = local_stack.kafka_bootstrap
    topic, group = _unique("it.frames"), _unique("it-group")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    sent = {f"frame-{i}".encode() for i in range(20)}
    futures = [
        producer.send(topic, key=f"cam-{i % 3}".encode(), value=value)
        for i, value in enumerate(sorted(sent))
    ]
    producer.flush(timeout=10)
    acked = [future.get(timeout=10) for future in futures]
    producer.close()
    assert all(meta.topic == topic for meta in acked)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,  # Tansu's join waits about half of it
        heartbeat_interval_ms=1000,
    )
    received: list[bytes] = []
    per_partition: Counter[int] = Counter()
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                received += [record.value for record in records]
                per_partition[tp.partition] += len(records)
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(received) == sorted(sent)

    # A group member that never joins reads the committed offsets (OffsetFetch).
    checker = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        for partition in (0, 1):
            committed = checker.committed(TopicPartition(topic, partition))
            assert (committed or 0) == per_partition[partition]
    finally:
        checker.close()


def test_s3_put_and_get_an_object(local_stack: StackSettings) -> None:
    client = _minio(local_stack)
    assert client.bucket_exists(local_stack.s3_bucket)
    key = f"heatmaps/it/{_unique('frame')}.png"
    payload = os.urandom(200_000)
    client.put_object(
        local_stack.s3_bucket, key, io.BytesIO(payload), len(payload), content_type="image/png"
    )
    response = client.get_object(local_stack.s3_bucket, key)
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    assert client.stat_object(local_stack.s3_bucket, key).size == len(payload)


def test_s3_rejects_wrong_credentials(local_stack: StackSettings) -> None:
    """The generated credentials are really checked, so they mean something."""
    from minio.error import S3Error

    intruder = Minio(
        local_stack.s3_endpoint, access_key="nobody", secret_key="wrong-secret", secure=False
    )
    with pytest.raises(S3Error):
        intruder.list_buckets()


def test_redis_set_get_and_pubsub(local_stack: StackSettings) -> None:
    client = redis.Redis.from_url(local_stack.redis_url, socket_timeout=5)
    try:
        key = _unique("kenpin:it")
        client.set(key, b"manifest", ex=60)
        assert client.get(key) == b"manifest"

        channel = _unique("kenpin:it:releases")
        pubsub = client.pubsub()
        pubsub.subscribe(channel)
        # Publish only once the subscription is confirmed, or the message is lost.
        confirm = pubsub.get_message(timeout=5)
        assert confirm is not None and confirm["type"] == "subscribe"
        assert client.publish(channel, b"v2") == 1
        message = pubsub.get_message(timeout=5)
        assert message is not None and message["data"] == b"v2"
        pubsub.close()
    finally:
        client.close()


def test_redis_requires_the_password(local_stack: StackSettings) -> None:
    host_port = local_stack.redis_url.rsplit("@", 1)[1]
    anonymous = redis.Redis.from_url(f"redis://{host_port}", socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        anonymous.close()


def test_cli_up_env_down_in_separate_processes(tmp_path: Path) -> None:
    """``up`` returns while the servers keep running; ``down`` is idempotent."""
    state = tmp_path / "cli-stack"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.local.cli", *args, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
            check=False,
        )

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        assert "export KENPIN_KAFKA_BOOTSTRAP=" in up.stdout
        stack = LocalStack(state)
        assert stack.is_running()
        again = cli("env")
        assert again.returncode == 0 and again.stdout == up.stdout
        redis_url = stack.settings.redis_url
        assert redis.Redis.from_url(redis_url, socket_timeout=5).ping()
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not LocalStack(state).is_running()
    assert cli("down").returncode == 0  # nothing left to stop
    assert cli("env").returncode == 1
