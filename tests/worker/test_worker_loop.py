"""The worker loop with in-process fakes: commit rules, dead letters, stalled rebalances.

The real-server behaviour is in tests/integration; these pin the rules that keep
a verdict from being lost: offsets move only after every output of a batch is
acknowledged, a failed send stops the commit, a stuck group join restarts the
consumer.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from kafka.structs import TopicPartition

from schemas.deadletters import DeadLetter
from schemas.frames import FrameHeaders
from schemas.manifest import ModelManifest, Normalisation, ProductThreshold
from schemas.verdicts import Verdict
from worker import service
from worker.model.network import StudentTeacher
from worker.model.runtime import InspectionModel
from worker.settings import WorkerSettings

Record = namedtuple("Record", "topic partition offset key value headers")


class FakeSend:
    """A Kafka send future: acknowledged at once, or failed, or left pending."""

    def __init__(self, fail: bool = False, pending: bool = False) -> None:
        self.fail, self.pending = fail, pending
        self.callbacks, self.errbacks = [], []

    def add_callback(self, fn):
        self.callbacks.append(fn)
        if not self.pending and not self.fail:
            fn("metadata")
        return self

    def add_errback(self, fn):
        self.errbacks.append(fn)
        if self.fail:
            fn(RuntimeError("broker refused"))
        return self

    def ack(self) -> None:
        for fn in self.callbacks:
            fn("metadata")


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = False
        self.hold: list[FakeSend] | None = None

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, value))
        future = FakeSend(fail=self.fail, pending=self.hold is not None)
        if self.hold is not None:
            self.hold.append(future)
        return future

    def flush(self, timeout=None):
        for future in self.hold or []:
            future.ack()

    def close(self, timeout=None):
        pass


class FakeConsumer:
    def __init__(self, batches: list[list[Record]] | None = None) -> None:
        self.batches = list(batches or [])
        self.commits: list[dict] = []
        self.listener = None
        self.closed = False

    def subscribe(self, pattern=None, listener=None):
        self.listener = listener

    def poll(self, timeout_ms=0, max_records=None):
        if not self.batches:
            return {}
        polled: dict[TopicPartition, list[Record]] = {}
        for r in self.batches.pop(0):
            polled.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        return polled

    def commit(self, offsets, timeout_ms=None):
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def close(self, autocommit=True, timeout_ms=None):
        self.closed = True


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key, data, content_type="application/octet-stream", metadata=None):
        self.objects[key] = data


@pytest.fixture(scope="module")
def model() -> InspectionModel:
    manifest = ModelManifest(
        version="unit-1",
        created=datetime.now(UTC),
        backbone="efficientnet_lite0",
        image_size=32,
        normalisation=Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3),
        sha256="0" * 64,
        products={
            "bottle": ProductThreshold(threshold=0.0, rule="every part is NG", normal_scores=1)
        },
    )
    return InspectionModel(StudentTeacher("efficientnet_lite0"), manifest, device="cpu")


def frame(offset: int, value: bytes | None = None, partition: int = 0) -> Record:
    headers = FrameHeaders(
        frame_id=f"f{offset}",
        line="l1",
        camera="cam-1",
        product="bottle",
        capture_time=datetime.now(UTC),
        content_type="image/png",
    )
    if value is None:
        value = cv2.imencode(".png", np.full((40, 40, 3), offset * 20 % 255, np.uint8))[1].tobytes()
    return Record(
        "kenpin.frames.l1", partition, offset, b"cam-1", value, headers.to_kafka_headers()
    )


def make_worker(model, consumer, producer=None, **settings) -> service.Worker:
    values = dict(max_batch=4, max_wait_ms=0, metrics_port=0, hot_swap=False)
    values.update(settings)
    return service.Worker(
        WorkerSettings(**values),
        model,
        consumer=consumer,
        producer=producer or FakeProducer(),
        store=FakeStore(),
    )


def run_steps(worker: service.Worker, steps: int) -> None:
    for _ in range(steps):
        worker.step()
    worker.uploads.shutdown(wait=True)  # heatmaps stored
    worker.commit_done()


def test_one_outcome_per_frame_and_commit_after_acks(model):
    consumer = FakeConsumer([[frame(0), frame(1, b"\x89PNG\r\n\x1a\nnot an image"), frame(2)]])
    producer = FakeProducer()
    worker = make_worker(model, consumer, producer)
    run_steps(worker, 2)
    verdicts = [Verdict.from_json(v) for t, v in producer.sent if t.startswith("kenpin.verdicts")]
    letters = [DeadLetter.from_json(v) for t, v in producer.sent if t == "kenpin.deadletter"]
    assert sorted(v.frame_id for v in verdicts) == ["f0", "f2"]
    assert [(d.source_offset, d.reason.value) for d in letters] == [(1, "truncated_image")]
    assert all(v.result == "ng" and v.heatmap_key in worker.store.objects for v in verdicts)
    assert consumer.commits == [{TopicPartition("kenpin.frames.l1", 0): 3}]


def test_no_commit_until_every_verdict_is_acknowledged(model):
    consumer = FakeConsumer([[frame(0), frame(1)]])
    producer = FakeProducer()
    producer.hold = []
    worker = make_worker(model, consumer, producer)
    run_steps(worker, 2)
    assert consumer.commits == []  # verdicts sent, not yet acknowledged
    producer.flush()
    worker.commit_done()
    assert consumer.commits == [{TopicPartition("kenpin.frames.l1", 0): 2}]


def test_a_refused_verdict_stops_the_commit(model):
    consumer = FakeConsumer([[frame(0)]])
    producer = FakeProducer()
    producer.fail = True
    worker = make_worker(model, consumer, producer)
    worker.step()
    worker.uploads.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="broker refused"):
        worker.commit_done()
    assert consumer.commits == []


def test_a_stalled_rebalance_restarts_the_consumer(model, monkeypatch):
    first, second = FakeConsumer(), FakeConsumer([[frame(0)]])
    monkeypatch.setattr(service, "make_frame_consumer", lambda settings: second)
    worker = make_worker(model, first, rebalance_stall_s=1.0)
    worker.joining_since = 0.0  # joined "long ago" and never got partitions
    run_steps(worker, 2)
    assert first.closed and worker.consumer is second
    assert second.listener is not None
    assert worker.metrics.consumer_restarts._value.get() == 1
    assert second.commits == [{TopicPartition("kenpin.frames.l1", 0): 1}]


def test_a_finished_rebalance_does_not_restart(model):
    consumer = FakeConsumer()
    worker = make_worker(model, consumer, rebalance_stall_s=1.0)
    consumer.listener.on_partitions_assigned([TopicPartition("kenpin.frames.l1", 0)])
    worker.step()
    assert worker.consumer is consumer and worker.joining_since is None
