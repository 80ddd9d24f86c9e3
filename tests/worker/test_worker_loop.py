"""The worker loop with in-process fakes: commit rules, dead letters, stalled rebalances.

The real-server behaviour is in tests/integration; these pin the rules that keep
a verdict from being lost: offsets move only after every output of a frame is
acknowledged, a refused send is sent again (never given up before the outage
deadline), a heatmap that waits holds back only its own partition, a frame that
names another line is a dead letter, a stuck group join restarts the consumer.
"""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition
from prometheus_client import generate_latest

from model.network import StudentTeacher
from model.runtime import InspectionModel
from schemas.deadletters import DeadLetter
from schemas.frames import FrameHeaders
from schemas.manifest import ModelManifest, Normalisation, ProductThreshold
from schemas.verdicts import Verdict, WorkerStages
from worker import service
from worker.settings import WorkerSettings

Record = namedtuple(
    "Record", "topic partition offset key value headers timestamp", defaults=(None,)
)


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
        self.headers: list[list[tuple[str, bytes]] | None] = []  # of each record sent
        self.fail = False
        self.hold: list[FakeSend] | None = None

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, value))
        self.headers.append(headers)
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
        self.paused_partitions: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = {TopicPartition("kenpin.frames.l1", 0)}
        self.refuse_commits = False

    def topics(self):
        return {"kenpin.frames.l1"}

    def partitions_for_topic(self, topic):
        return {0, 1}

    def assignment(self):
        return set(self.assigned)

    def pause(self, *partitions):
        self.paused_partitions |= set(partitions)

    def resume(self, *partitions):
        self.paused_partitions -= set(partitions)

    def paused(self):
        return set(self.paused_partitions)

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
        if self.refuse_commits:
            raise KafkaTimeoutError("commit timed out")
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def close(self, autocommit=True, timeout_ms=None):
        self.closed = True


class FakeStore:
    """An S3 bucket that can be 'down' (every put fails) and brought back."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.up = threading.Event()
        self.up.set()

    def put(self, key, data, content_type="application/octet-stream", metadata=None):
        if not self.up.is_set():
            raise ConnectionRefusedError("S3 is down")
        self.objects[key] = data


class FakeTopics:
    """Records the topics the worker creates on purpose."""

    def __init__(self) -> None:
        self.created: dict[str, int] = {}

    def ensure(self, topic, partitions):
        self.created.setdefault(topic, partitions)

    def close(self):
        pass


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
        topics=FakeTopics(),
    )


def heatmaps_settled(worker: service.Worker, timeout_s: float = 10.0) -> None:
    """Wait until the heatmap backlog is empty (stored, or nothing was flagged)."""
    deadline = time.monotonic() + timeout_s
    while worker.heatmaps.waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.heatmaps.waiting == 0


def run_steps(worker: service.Worker, steps: int) -> None:
    for _ in range(steps):
        worker.step()
    heatmaps_settled(worker)
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
    # heatmaps finish in their own threads: the partition may commit in steps, never back
    tp = TopicPartition("kenpin.frames.l1", 0)
    committed = [c[tp] for c in consumer.commits]
    assert committed == sorted(committed) and committed[-1] == 3


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


def test_a_refused_verdict_is_sent_again_and_committed_only_then(model):
    consumer = FakeConsumer([[frame(0)]])
    producer = FakeProducer()
    producer.fail = True
    worker = make_worker(model, consumer, producer)
    worker.step()
    heatmaps_settled(worker)
    worker.commit_done()
    assert consumer.commits == []  # refused: nothing committed, no crash
    assert worker.broker_failing_since is not None
    worker.flow_control()
    assert consumer.paused_partitions == consumer.assigned  # no new frames meanwhile
    producer.fail = False
    worker.commit_done()  # sent again, acknowledged this time
    verdicts = [v for t, v in producer.sent if t == "kenpin.verdicts.l1"]
    assert len(verdicts) >= 2 and len({Verdict.from_json(v).frame_id for v in verdicts}) == 1
    assert consumer.commits == [{TopicPartition("kenpin.frames.l1", 0): 1}]
    assert worker.broker_failing_since is None
    worker.flow_control()
    assert consumer.paused_partitions == set()


def test_a_broker_away_past_the_deadline_ends_the_worker_with_exit_code_3(model):
    consumer = FakeConsumer([[frame(0)]])
    producer = FakeProducer()
    producer.fail = True
    worker = make_worker(model, consumer, producer, broker_outage_deadline_s=0.01)
    worker.step()
    worker.commit_done()
    time.sleep(0.02)
    worker.commit_done()
    assert worker.exit_code == service.EXIT_BROKER_UNREACHABLE
    assert consumer.commits == []
    assert worker.run() == service.EXIT_BROKER_UNREACHABLE  # stopped: closes and says why


def test_refused_commits_pause_consumption_and_are_retried(model):
    consumer = FakeConsumer([[frame(0)]])
    consumer.refuse_commits = True
    worker = make_worker(model, consumer)
    run_steps(worker, 1)
    assert consumer.commits == [] and worker.broker_failing_since is not None
    worker.flow_control()
    assert consumer.paused_partitions
    consumer.refuse_commits = False
    worker._retry_commit_at = 0.0  # skip the backoff
    worker.commit_done()
    assert consumer.commits == [{TopicPartition("kenpin.frames.l1", 0): 1}]
    worker.flow_control()
    assert not consumer.paused_partitions


def test_a_heatmap_waiting_for_s3_holds_back_only_its_own_partition(model):
    ng, ok = frame(0, partition=0), frame(0, partition=1)
    consumer = FakeConsumer([[ng]])
    worker = make_worker(model, consumer)
    worker.store.up.clear()  # S3 down
    worker.step()
    consumer.batches.append([ok])
    worker.model.manifest.products["bottle"].threshold = 1e9  # the next frame is OK
    try:
        worker.step()
    finally:
        worker.model.manifest.products["bottle"].threshold = 0.0
    worker.commit_done()
    # the OK frame's partition commits; the NG frame's waits for its heatmap
    assert consumer.commits == [{TopicPartition("kenpin.frames.l1", 1): 1}]
    assert worker.heatmaps.waiting == 1
    worker.store.up.set()  # S3 back: the backlog is stored, the partition commits
    heatmaps_settled(worker)
    worker.commit_done()
    assert consumer.commits[-1] == {TopicPartition("kenpin.frames.l1", 0): 1}
    assert any(k.endswith("f0.png") for k in worker.store.objects)


def test_a_full_heatmap_backlog_pauses_consumption_until_it_drains(model):
    consumer = FakeConsumer([[frame(0), frame(1)]])
    worker = make_worker(model, consumer, heatmap_backlog_max=2)
    worker.store.up.clear()
    worker.step()
    worker.flow_control()
    assert worker.heatmaps.full() and consumer.paused_partitions == consumer.assigned
    worker.store.up.set()
    heatmaps_settled(worker)
    worker.flow_control()
    assert consumer.paused_partitions == set()


def test_a_frame_naming_another_line_is_a_dead_letter(model):
    hostile = frame(0)
    hostile = hostile._replace(
        headers=[(k, b"other-line" if k == "kenpin-line" else v) for k, v in hostile.headers]
    )
    consumer = FakeConsumer([[hostile]])
    producer = FakeProducer()
    worker = make_worker(model, consumer, producer)
    run_steps(worker, 2)
    assert [t for t, _ in producer.sent] == ["kenpin.deadletter"]
    letter = DeadLetter.from_json(producer.sent[0][1])
    assert letter.reason.value == "line_mismatch" and letter.source_topic == "kenpin.frames.l1"
    assert not any("other-line" in k for k in worker.store.objects)
    assert "kenpin.verdicts.other-line" not in worker.topics.created
    assert consumer.commits == [{TopicPartition("kenpin.frames.l1", 0): 1}]


def test_verdict_topics_are_created_only_for_lines_read(model):
    consumer = FakeConsumer([[frame(0)]])
    worker = make_worker(model, consumer)
    run_steps(worker, 1)
    assert worker.topics.created == {"kenpin.verdicts.l1": 2}


def test_no_subscription_until_a_line_topic_exists(model):
    consumer = FakeConsumer()
    consumer.topics = lambda: set()
    worker = make_worker(model, consumer, metadata_max_age_ms=100)
    worker.step()
    assert consumer.listener is None and not worker.subscribed
    consumer.topics = lambda: {"kenpin.frames.first-line"}
    worker._next_topic_check = 0.0
    worker.step()
    assert consumer.listener is not None and worker.subscribed


def test_a_stalled_rebalance_restarts_the_consumer(model, monkeypatch):
    first, second = FakeConsumer(), FakeConsumer([[frame(0)]])
    monkeypatch.setattr(service, "make_frame_consumer", lambda settings: second)
    worker = make_worker(model, first, rebalance_stall_s=1.0)
    worker.step()  # subscribes
    worker.joining_since = 0.0  # joined "long ago" and never got partitions
    run_steps(worker, 3)
    assert first.closed and worker.consumer is second
    assert second.listener is not None
    assert worker.metrics.consumer_restarts._value.get() == 1
    assert second.commits == [{TopicPartition("kenpin.frames.l1", 0): 1}]


def test_a_finished_rebalance_does_not_restart(model):
    consumer = FakeConsumer()
    worker = make_worker(model, consumer, rebalance_stall_s=1.0)
    worker.step()  # subscribes
    consumer.listener.on_partitions_assigned([TopicPartition("kenpin.frames.l1", 0)])
    worker.step()
    assert worker.consumer is consumer and worker.joining_since is None


class CountingConsumer(FakeConsumer):
    """Records the timeout of every poll."""

    def __init__(self, batches: list[list[Record]]) -> None:
        super().__init__(batches)
        self.timeouts: list[int] = []

    def poll(self, timeout_ms=0, max_records=None):
        self.timeouts.append(timeout_ms)
        return super().poll(timeout_ms, max_records)


def test_a_frame_with_nothing_behind_it_is_judged_without_waiting_for_company(model):
    """However long a batch may wait, a lone frame is judged on the next turn: that turn's
    poll does not block (frames are waiting) and brings nothing more."""
    consumer = CountingConsumer([[frame(0)]])
    producer = FakeProducer()
    worker = make_worker(model, consumer, producer, max_wait_ms=60_000)
    worker.step()  # the frame arrives: the batch may still grow
    assert not producer.sent
    worker.step()  # nothing more arrived: judged now, not in 60 s
    assert [Verdict.from_json(v).frame_id for _, v in producer.sent] == ["f0"]
    assert consumer.timeouts[1] == 0


def test_under_a_backlog_the_batch_grows_to_its_size(model):
    consumer = FakeConsumer([[frame(0)], [frame(1), frame(2)], [frame(3), frame(4)]])
    producer = FakeProducer()
    worker = make_worker(model, consumer, producer, max_wait_ms=60_000)
    batches = []
    real = worker.judge_batch
    worker.judge_batch = lambda batch: (batches.append(len(batch)), real(batch))
    run_steps(worker, 4)
    assert batches == [4, 1]  # max_batch 4: frames kept arriving until it was full


def test_a_verdict_record_says_where_its_frame_spent_its_time(model):
    """Capture <= polled <= judging <= judged <= produced, in the record's stages header."""
    producer = FakeProducer()
    sent = frame(0)
    worker = make_worker(model, FakeConsumer([[sent]]), producer)
    run_steps(worker, 2)
    (stages,) = [WorkerStages.from_kafka_headers(h) for h in producer.headers]
    captured = FrameHeaders.from_kafka_headers(sent.headers).capture_time.timestamp() * 1000
    verdict = Verdict.from_json(producer.sent[0][1])
    assert captured <= stages.polled <= stages.judging <= stages.judged
    assert stages.judged <= verdict.decision_time.timestamp() * 1000 + 1  # ms rounding
    text = generate_latest(worker.metrics.registry).decode()
    for stage in ("to_worker", "queue", "model"):
        assert f'kenpin_frame_stage_seconds_count{{stage="{stage}"}} 1.0' in text


def aged(record: Record, age_ms: float) -> Record:
    """The record as the broker would hand it over `age_ms` after the camera sent it."""
    return record._replace(timestamp=time.time() * 1000 - age_ms)


def test_frames_still_in_time_are_judged_before_frames_past_the_deadline(model):
    """A backlog (a restarted worker) costs only its own parts: the parts captured since
    are judged first, the late ones after, and no commit passes a frame not yet judged."""
    backlog = [aged(frame(0), 10_000), aged(frame(1), 9_000), aged(frame(2), 0)]
    consumer = FakeConsumer([backlog])
    producer = FakeProducer()
    worker = make_worker(model, consumer, producer, late_after_ms=500)
    worker.step()  # all three arrive; only the one in time is judged
    assert [Verdict.from_json(v).frame_id for _, v in producer.sent] == ["f2"]
    heatmaps_settled(worker)
    worker.commit_done()
    assert consumer.commits == []  # frame 0 is not judged yet: nothing may be committed
    run_steps(worker, 1)
    assert [Verdict.from_json(v).frame_id for _, v in producer.sent] == ["f2", "f0", "f1"]
    assert consumer.commits[-1] == {TopicPartition("kenpin.frames.l1", 0): 3}
    text = generate_latest(worker.metrics.registry).decode()
    assert "kenpin_late_frames_total 2.0" in text


def test_with_late_after_ms_0_frames_are_judged_in_arrival_order(model):
    backlog = [aged(frame(0), 10_000), aged(frame(1), 0)]
    producer = FakeProducer()
    worker = make_worker(model, FakeConsumer([backlog]), producer, late_after_ms=0)
    run_steps(worker, 1)
    assert [Verdict.from_json(v).frame_id for _, v in producer.sent] == ["f0", "f1"]


def test_a_full_queue_pauses_fetching_until_the_model_catches_up(model):
    consumer = FakeConsumer([[frame(i) for i in range(3)]])
    worker = make_worker(model, consumer, max_batch=1, max_buffered_frames=2, max_wait_ms=60_000)
    worker.step()  # three arrive (more than the queue holds), one is judged
    worker.flow_control()
    assert consumer.paused_partitions  # two still queued: full
    worker.step()
    worker.flow_control()
    assert not consumer.paused_partitions


def test_a_record_without_a_timestamp_counts_as_in_time(model):
    backlog = [aged(frame(0), 10_000), frame(1)._replace(timestamp=-1)]
    producer = FakeProducer()
    worker = make_worker(model, FakeConsumer([backlog]), producer, late_after_ms=500)
    worker.step()
    assert [Verdict.from_json(v).frame_id for _, v in producer.sent] == ["f1"]
