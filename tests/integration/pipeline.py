"""Running a worker against the real local stack, and reading back what it published.

Shared by the integration tests: settings for one isolated run (its own topics,
group and dead-letter topic), topic creation, and readers of verdicts, dead
letters and committed offsets.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from schemas.deadletters import DeadLetter
from schemas.verdicts import Verdict
from tests.integration.frames import Sent
from worker.settings import WorkerSettings

PRODUCTS = ("washer", "tile")


def test_images(line_data: Path) -> list[tuple[Path, str]]:
    return [
        (p, product)
        for product in PRODUCTS
        for p in sorted((line_data / product / "test").rglob("*.png"))
    ]


test_images.__test__ = False  # a helper, not a test


def run_settings(stack, artifact: Path, run: str, **overrides) -> WorkerSettings:
    values = dict(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        s3_endpoint=stack.s3_endpoint,
        s3_access_key=stack.s3_access_key,
        s3_secret_key=stack.s3_secret_key,
        s3_bucket=stack.s3_bucket,
        s3_secure=False,
        frames_topic_pattern=rf"^kenpin\.frames\.{run}-.*",
        deadletter_topic=f"kenpin.deadletter.{run}",
        consumer_group=f"workers-{run}",
        session_timeout_ms=6000,  # Tansu's group join takes about half of it
        rebalance_stall_s=15,  # Tansu sometimes never completes a rebalance (see stack.py)
        metadata_max_age_ms=1000,
        model_path=artifact,
        device="cpu",
        max_batch=8,
        max_wait_ms=50,
        metrics_port=0,
    )
    values.update(overrides)
    return WorkerSettings(**values)


def create_topics(stack, topics: list[str], partitions: int = 2) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
        )
    finally:
        admin.close()


def collect_outcomes(
    stack, topics: list[str], expected: int, timeout_s: float = 90
) -> tuple[list[Verdict], list[DeadLetter]]:
    """Read verdict and dead-letter topics from the beginning until `expected` outcomes."""
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    verdicts: list[Verdict] = []
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    assigned: set[TopicPartition] = set()
    try:
        while time.monotonic() < deadline and len(verdicts) + len(letters) < expected:
            partitions = {
                TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
            }
            if partitions - assigned:  # topics appear when the worker first writes to them
                new = partitions - assigned
                consumer.assign(sorted(assigned | partitions))
                consumer.seek_to_beginning(*new)
                assigned |= partitions
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if tp.topic.startswith("kenpin.deadletter"):
                        letters.append(DeadLetter.from_json(record.value))
                    else:
                        verdicts.append(Verdict.from_json(record.value))
    finally:
        consumer.close()
    return verdicts, letters


def committed_offsets(stack, group: str, sent: list[Sent]) -> dict[TopicPartition, tuple]:
    """(committed, expected) per partition; expected = last produced offset + 1."""
    ends: dict[TopicPartition, int] = {}
    for s in sent:
        tp = TopicPartition(s.topic, s.partition)
        ends[tp] = max(ends.get(tp, 0), s.offset + 1)
    checker = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        return {tp: (checker.committed(tp), end) for tp, end in ends.items()}
    finally:
        checker.close()


def wait_for_commits(stack, group: str, sent: list[Sent], timeout_s: float = 20) -> None:
    """Offsets are committed after the outputs are acknowledged: wait for the last commit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(c == e for c, e in committed_offsets(stack, group, sent).values()):
            return
        time.sleep(0.5)


def match(sent: list[Sent], verdicts: list[Verdict], letters: list[DeadLetter]) -> Counter:
    """How many outcomes each produced record got, keyed by (topic, partition, offset)."""
    by_frame = {s.frame_id: (s.topic, s.partition, s.offset) for s in sent if s.frame_id}
    outcomes: Counter = Counter()
    for v in verdicts:
        outcomes[by_frame[v.frame_id]] += 1
    for d in letters:
        outcomes[(d.source_topic, d.source_partition, d.source_offset)] += 1
    return outcomes
