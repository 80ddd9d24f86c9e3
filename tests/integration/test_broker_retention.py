"""The local stack's broker retention on real servers: consumed old batches go, nothing unread.

Tansu keeps every record batch in S3 and lists them all for each fetch; the stack's
sweeper (deploy/local/retention.py) deletes the ones every group has read.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata
from minio import Minio

from deploy.local.retention import BATCH_KEY
from deploy.local.stack import BROKER_BUCKET, LocalStack

pytestmark = pytest.mark.integration

RECORDS = 20
READ = 10  # what the group has read of the grouped topic


def batch_offsets(client: Minio, topic: str) -> list[int]:
    keys = client.list_objects(BROKER_BUCKET, prefix="clusters/", recursive=True)
    return sorted(
        int(match["offset"])
        for item in keys
        if (match := BATCH_KEY.match(item.object_name)) and match["topic"] == topic
    )


def test_retention_deletes_only_batches_every_group_has_read(tmp_path: Path) -> None:
    with LocalStack(tmp_path / "stack", broker_retention_s=1.0) as stack:
        settings = stack.settings
        bootstrap = settings.kafka_bootstrap
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("grouped", 1, 1), NewTopic("ungrouped", 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        for topic in ("grouped", "ungrouped"):
            for i in range(RECORDS):  # one batch per record: each send waits for its ack
                producer.send(topic, value=f"{topic}-{i}".encode()).get(timeout=10)
        producer.close()
        grouped = TopicPartition("grouped", 0)
        group = KafkaConsumer(bootstrap_servers=bootstrap, group_id="g", enable_auto_commit=False)
        group.commit({grouped: OffsetAndMetadata(READ, "", -1)})
        group.close()

        s3 = Minio(
            stack.broker_s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=False,
        )
        assert batch_offsets(s3, "grouped") == list(range(RECORDS))
        deadline = time.monotonic() + 30  # the sweeper runs every 5 s
        while time.monotonic() < deadline and (
            batch_offsets(s3, "ungrouped") != [RECORDS - 1]
            or batch_offsets(s3, "grouped") != list(range(READ, RECORDS))
        ):
            time.sleep(0.5)
        # no group reads it: all but the newest batch; the group's unread records stay
        assert batch_offsets(s3, "ungrouped") == [RECORDS - 1]
        assert batch_offsets(s3, "grouped") == list(range(READ, RECORDS))

        # the group resumes where it was and gets every unread record; the earliest
        # offset moved up, as after a Kafka retention
        resumed = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id="g",
            enable_auto_commit=False,
            consumer_timeout_ms=5000,
        )
        resumed.assign([grouped])
        assert resumed.beginning_offsets([grouped]) == {grouped: READ}
        values = [record.value for record in resumed]
        resumed.close()
        assert values == [f"grouped-{i}".encode() for i in range(READ, RECORDS)]
