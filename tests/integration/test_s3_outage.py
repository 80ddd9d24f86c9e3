"""An S3 outage on the real stack: verdicts keep flowing, heatmaps wait, nothing is lost.

SeaweedFS (the S3 server) is killed by its pid for two minutes while a camera
streams frames and the model flags every part, so every frame needs a heatmap.
The PLCs must keep getting verdicts throughout; the heatmaps wait in the
worker's backlog and are all stored once S3 is back; every offset is committed
in the end. The broker keeps its topics in memory here: with the default
stack it stores them in the same S3 server, which would take it down too.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer

from deploy.local.stack import LocalStack
from model.loading import load_model
from planes.storage import ObjectStore
from tests.integration.frames import Sent, produce_frames
from tests.integration.pipeline import (
    collect_outcomes,
    committed_offsets,
    create_topics,
    run_settings,
    test_images,
    wait_for_commits,
)
from worker.service import Worker

OUTAGE_S = float(os.environ.get("KENPIN_TEST_S3_OUTAGE_S", "120"))
FPS = 4.0


@pytest.fixture(scope="module")
def memory_broker_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("s3-outage-stack"), broker_storage="memory") as stack:
        yield stack


class Camera(threading.Thread):
    """Streams the images round-robin at FPS until stopped; remembers every frame sent."""

    def __init__(self, stack, topic: str, line: str, images) -> None:
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        self.topic, self.line, self.images = topic, line, images
        self.sent: list[Sent] = []
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.wait(1 / FPS):
            image = self.images[i % len(self.images)]
            self.sent += produce_frames(self.producer, self.topic, self.line, [image], bad=False)
            i += 1
        self.producer.close()


def test_verdicts_flow_through_a_two_minute_s3_outage(memory_broker_stack, artifact, line_data):
    stack = memory_broker_stack.settings
    run = f"s{uuid.uuid4().hex[:8]}"
    line = f"{run}-l1"
    topic = f"kenpin.frames.{line}"
    settings = run_settings(stack, artifact, run)
    create_topics(stack, [topic], partitions=2)
    model = load_model(artifact, device="cpu")
    for product in model.manifest.products.values():
        product.threshold = -1.0  # every part is NG: every frame needs a heatmap
    worker = Worker(settings, model)
    worker_thread = threading.Thread(target=worker.run, daemon=True)
    camera = Camera(stack, topic, line, test_images(line_data))
    peak_backlog = 0
    worker_thread.start()
    camera.start()
    try:
        time.sleep(15)
        outage_start = datetime.now(UTC)
        memory_broker_stack.stop_server("seaweedfs", kill=True)
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            peak_backlog = max(peak_backlog, worker.heatmaps.waiting)
            assert worker_thread.is_alive()
            time.sleep(0.5)
        memory_broker_stack.start_server("seaweedfs")
        outage_end = datetime.now(UTC)
        time.sleep(15)
        camera.halt.set()
        camera.join(timeout=30)
        sent = camera.sent
        verdicts, _ = collect_outcomes(
            stack, [f"kenpin.verdicts.{line}"], expected=len(sent), timeout_s=120
        )
        wait_for_commits(stack, settings.consumer_group, sent, timeout_s=120)
        verdicts, _ = collect_outcomes(  # read once more to count duplicates
            stack, [f"kenpin.verdicts.{line}"], expected=10**9, timeout_s=3
        )
    finally:
        camera.halt.set()
        worker.stop()
        worker_thread.join(timeout=60)
    assert not worker_thread.is_alive()

    judged = Counter(v.frame_id for v in verdicts)
    lost = {s.frame_id for s in sent} - set(judged)
    first = {}
    for v in verdicts:
        first.setdefault(v.frame_id, v)

    def rate(start: datetime, end: datetime) -> float:
        n = sum(1 for v in first.values() if start <= v.decision_time < end)
        return n / (end - start).total_seconds()

    begin = min(v.decision_time for v in first.values())
    finish = max(v.decision_time for v in first.values())
    store = ObjectStore.from_settings(settings)
    missing_heatmaps = [v.frame_id for v in first.values() if not store.exists(v.heatmap_key)]
    offsets = committed_offsets(stack, settings.consumer_group, sent)
    print(
        f"s3 outage {OUTAGE_S:.0f} s: {len(sent)} frames sent, {len(set(judged))} judged "
        f"({sum(judged.values())} verdicts, {sum(n - 1 for n in judged.values())} duplicates), "
        f"{len(lost)} lost; verdicts/s before {rate(begin, outage_start):.2f}, "
        f"during {rate(outage_start, outage_end):.2f}, after {rate(outage_end, finish):.2f}; "
        f"peak heatmap backlog {peak_backlog}; {len(missing_heatmaps)} heatmaps missing after; "
        f"offsets committed to the end: {all(c == e for c, e in offsets.values())}"
    )
    assert not lost
    assert all(v.result == "ng" for v in first.values())
    assert rate(outage_start, outage_end) > 0
    assert peak_backlog > 0
    assert missing_heatmaps == []
    assert all(c == e for c, e in offsets.values()), offsets
