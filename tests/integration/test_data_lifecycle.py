"""What kenpin keeps, and for how long, set on the real servers.

- `kenpin-trainer lifecycle` turns the retention settings into the bucket's S3
  lifecycle rules (SeaweedFS stores and returns them as MinIO or AWS would);
- a topic kenpin creates carries `retention.ms` and `max.message.bytes` from
  the settings (Tansu answers DescribeConfigs with them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from planes.storage import KIND_TAG, ObjectStore
from worker.kafka_io import TopicAdmin, security_config
from worker.settings import WorkerSettings


def test_the_lifecycle_command_sets_one_rule_per_kind_kept_for_a_while(local_stack):
    bucket = f"lifecycle-{uuid.uuid4().hex[:8]}"  # its own bucket: rules are bucket-wide
    env = {k: v for k, v in os.environ.items() if not k.startswith("KENPIN_")}
    env |= local_stack.env | {
        "KENPIN_S3_BUCKET": bucket,
        "KENPIN_HEATMAPS_RETENTION_DAYS": "14",
        "KENPIN_ORIGINALS_RETENTION_DAYS": "3",
        "KENPIN_NORMALS_RETENTION_DAYS": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "lifecycle"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    store = ObjectStore.from_settings(WorkerSettings(**_s3(local_stack), s3_bucket=bucket))
    rules = {
        r.rule_id: (r.rule_filter.and_operator.prefix, dict(r.rule_filter.and_operator.tags))
        for r in store.retention().rules
    }
    days = {r.rule_id: r.expiration.days for r in store.retention().rules}
    assert rules == {
        "kenpin-heatmap-retention": ("heatmaps/", {KIND_TAG: "heatmap"}),
        "kenpin-original-retention": ("heatmaps/", {KIND_TAG: "original"}),
    }
    assert days == {"kenpin-heatmap-retention": 14, "kenpin-original-retention": 3}
    assert "kept for ever: normal" in result.stdout

    # the objects the rules select carry the tag, so the server can apply them
    store.put("heatmaps/l1/2026-01-01/f.original.png", b"o")
    tags = store.client.get_object_tags(bucket, "heatmaps/l1/2026-01-01/f.original.png")
    assert dict(tags) == {KIND_TAG: "original"}


def test_a_topic_kenpin_creates_has_its_retention_and_largest_record(local_stack):
    settings = WorkerSettings(
        kafka_bootstrap=local_stack.kafka_bootstrap,
        topic_retention_ms=7_200_000,
        topic_max_message_bytes=10 * 2**20,
    )
    topic = f"kenpin.verdicts.cfg{uuid.uuid4().hex[:8]}"
    topics = TopicAdmin(settings)
    try:
        topics.ensure(topic, 2)
    finally:
        topics.close()
    admin = KafkaAdminClient(**security_config(settings))
    try:
        (response,) = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    (resource,) = response.resources
    configs = {entry[0]: entry[1] for entry in resource[4]}
    assert configs["retention.ms"] == "7200000"
    assert configs["max.message.bytes"] == str(10 * 2**20)


def _s3(stack) -> dict[str, object]:
    return {
        "s3_endpoint": stack.s3_endpoint,
        "s3_access_key": stack.s3_access_key,
        "s3_secret_key": stack.s3_secret_key,
        "s3_secure": stack.s3_secure,
    }
