"""The worker against the REAL local stack: every frame yields exactly one outcome.

Frames on two line topics, with every kind of bad input mixed in; the worker
must publish one verdict or one dead letter per frame, store a heatmap and the
original bytes for every NG verdict, and commit offsets up to the end. Then the
crash test: kill -9 mid-stream, restart, and no frame may be missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from schemas.deadletters import DeadLetter
from schemas.verdicts import Verdict
from tests.integration.frames import Sent, produce_frames
from trainer.export import export
from trainer.synthetic import generate
from trainer.train import TrainConfig, train
from worker.model.runtime import InspectionModel
from worker.service import Worker
from worker.settings import WorkerSettings
from worker.storage import ObjectStore

PRODUCTS = ("washer", "tile")


@pytest.fixture(scope="module")
def line_data(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("line"),
        products=PRODUCTS,
        size=64,
        train=12,
        test_good=3,
        test_per_defect=2,
        seed=5,
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, line_data) -> Path:
    result = train(line_data, TrainConfig(image_size=64, epochs=3, batch_size=8), progress=False)
    out = tmp_path_factory.mktemp("model")
    export(result, out, version="it-model-1")
    return out


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
        redis_url=stack.env["KENPIN_REDIS_URL"],
        s3_endpoint=stack.s3_endpoint,
        s3_access_key=stack.s3_access_key,
        s3_secret_key=stack.s3_secret_key,
        s3_bucket=stack.env["KENPIN_S3_BUCKET"],
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


def test_every_frame_gets_exactly_one_outcome(local_stack, artifact, line_data):
    run = f"p{uuid.uuid4().hex[:8]}"
    lines = [f"{run}-l1", f"{run}-l2"]
    settings = run_settings(local_stack, artifact, run)
    create_topics(local_stack, [f"kenpin.frames.{line}" for line in lines])

    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
    images = test_images(line_data)
    sent: list[Sent] = []
    for line in lines:
        sent += produce_frames(producer, f"kenpin.frames.{line}", line, images)
    producer.close()
    bad_kinds = {s.kind for s in sent} - {"good"}
    assert len(bad_kinds) >= 5

    worker = Worker(settings, InspectionModel.load(artifact, device="cpu"))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        verdicts, letters = collect_outcomes(
            local_stack,
            [f"kenpin.verdicts.{line}" for line in lines] + [settings.deadletter_topic],
            expected=len(sent),
        )
        wait_for_commits(local_stack, settings.consumer_group, sent)
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()

    outcomes = match(sent, verdicts, letters)
    assert len(verdicts) + len(letters) == len(sent)
    assert all(outcomes[(s.topic, s.partition, s.offset)] == 1 for s in sent)
    good = [s for s in sent if s.kind == "good"]
    assert len(verdicts) == len(good)
    expected_reasons = {
        "corrupt": "corrupt_image",
        "truncated": "truncated_image",
        "empty": "empty_payload",
        "bomb": "image_too_large",
        "unsupported_content_type": "unsupported_content_type",
        "missing_headers": "missing_headers",
        "invalid_headers": "invalid_headers",
        "unknown_product": "unknown_product",
    }
    by_offset = {(d.source_topic, d.source_partition, d.source_offset): d for d in letters}
    for s in sent:
        if s.kind != "good":
            letter = by_offset[(s.topic, s.partition, s.offset)]
            assert letter.reason.value == expected_reasons[s.kind], (s.kind, letter.detail)
            assert letter.original_headers is not None

    assert {v.model_version for v in verdicts} == {"it-model-1"}
    ng = [v for v in verdicts if v.result == "ng"]
    assert ng, "the synthetic defects should flag at least one part"
    store = ObjectStore.from_settings(settings)
    for v in ng:
        assert store.exists(v.heatmap_key)
        assert store.get(v.heatmap_key)[:8] == b"\x89PNG\r\n\x1a\n"
        assert store.exists(v.heatmap_key.replace(".png", ".original.png"))
    assert all(v.heatmap_key is None for v in verdicts if v.result == "ok")

    offsets = committed_offsets(local_stack, settings.consumer_group, sent)
    assert all(c == e for c, e in offsets.values()), offsets


def test_a_new_line_is_picked_up_without_restart(local_stack, artifact, line_data):
    run = f"n{uuid.uuid4().hex[:8]}"
    settings = run_settings(local_stack, artifact, run)
    first, second = f"{run}-a", f"{run}-b"
    create_topics(local_stack, [f"kenpin.frames.{first}"], partitions=1)
    worker = Worker(settings, InspectionModel.load(artifact, device="cpu"))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
        images = test_images(line_data)[:3]
        sent = produce_frames(producer, f"kenpin.frames.{first}", first, images, bad=False)
        collect_outcomes(local_stack, [f"kenpin.verdicts.{first}"], expected=len(sent))
        create_topics(local_stack, [f"kenpin.frames.{second}"], partitions=1)
        sent2 = produce_frames(producer, f"kenpin.frames.{second}", second, images, bad=False)
        producer.close()
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{second}"], expected=len(sent2), timeout_s=60
        )
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert {v.frame_id for v in verdicts} == {s.frame_id for s in sent2}


def test_kill_minus_9_mid_stream_loses_no_frame(local_stack, artifact, line_data, tmp_path):
    """A worker process killed with SIGKILL mid-stream; a new one finishes the job."""
    run = f"k{uuid.uuid4().hex[:8]}"
    line = f"{run}-l1"
    topic = f"kenpin.frames.{line}"
    settings = run_settings(local_stack, artifact, run)
    create_topics(local_stack, [topic], partitions=2)
    env = {
        **os.environ,
        **{
            f"KENPIN_{k.upper()}": str(v)
            for k, v in settings.model_dump(mode="json").items()
            if v is not None
        },
        "KENPIN_S3_ACCESS_KEY": local_stack.s3_access_key,
        "KENPIN_S3_SECRET_KEY": local_stack.s3_secret_key,
        "KENPIN_LOG_FORMAT": "json",
    }

    def start_worker(log_name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            env=env,
            stdout=open(tmp_path / log_name, "wb"),
            stderr=subprocess.STDOUT,
        )

    images = test_images(line_data) * 4
    first = start_worker("worker1.log")
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
    try:
        sent = produce_frames(producer, topic, line, images[: len(images) // 2], bad=False)
        # kill once the worker is demonstrably mid-stream: some verdicts out, not all
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=8, timeout_s=60
        )
        assert verdicts, (tmp_path / "worker1.log").read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        sent += produce_frames(producer, topic, line, images[len(images) // 2 :], bad=False)
    finally:
        producer.close()
        if first.poll() is None:
            first.kill()

    second = start_worker("worker2.log")
    try:
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=len(sent), timeout_s=120
        )
        # duplicates from the replay may still be arriving; read once more to count them
        wait_for_commits(local_stack, settings.consumer_group, sent)
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=10**9, timeout_s=3
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    judged = Counter(v.frame_id for v in verdicts)
    missing = {s.frame_id for s in sent} - set(judged)
    duplicates = sum(n - 1 for n in judged.values())
    print(
        f"crash test: {len(sent)} frames, {len(set(judged))} judged, {len(missing)} missing, "
        f"{duplicates} duplicate verdicts"
    )
    assert not missing
    assert second.returncode == 0, (tmp_path / "worker2.log").read_text()[-3000:]
