"""Lines on the real stack: the topic decides a frame's line, and a fresh plant's first line runs.

A camera, broken or hostile, that writes frames naming another line into its
own topic must not reach that other line's PLC or heatmap folder: the frames
become dead letters, no verdict topic is created for the named line, nothing is
stored under its prefix. And a worker started before any line exists (a fresh
plant) must judge the first line as soon as a camera creates its topic.
"""

from __future__ import annotations

import threading
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer

from model.loading import load_model
from planes.storage import ObjectStore
from tests.integration.frames import headers_for, produce_frames
from tests.integration.pipeline import (
    collect_outcomes,
    create_topics,
    run_settings,
    test_images,
    wait_for_commits,
)
from worker.cli import main as worker_cli
from worker.service import Worker


def _topics(stack) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def test_a_camera_cannot_write_into_another_line(local_stack, artifact, line_data):
    run = f"i{uuid.uuid4().hex[:8]}"
    line, victim = f"{run}-l1", f"{run}-victim"
    topic = f"kenpin.frames.{line}"
    settings = run_settings(local_stack, artifact, run)
    create_topics(local_stack, [topic], partitions=1)
    images = test_images(line_data)[:6]

    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
    honest = produce_frames(producer, topic, line, images, bad=False)
    hostile_ids = []
    for path, product in images:  # same images, each claiming the victim line
        headers = headers_for(victim, product)
        hostile_ids.append(dict(headers)["kenpin-frame-id"].decode())
        producer.send(topic, key=b"cam-1", value=path.read_bytes(), headers=headers)
    producer.flush(timeout=30)
    producer.close()
    # a worker whose model flags every part: a hostile frame would leave a heatmap
    model = load_model(artifact, device="cpu")
    for product in model.manifest.products.values():
        product.threshold = -1.0
    worker = Worker(settings, model)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        total = len(honest) + len(hostile_ids)
        verdicts, letters = collect_outcomes(
            local_stack,
            [f"kenpin.verdicts.{line}", f"kenpin.verdicts.{victim}", settings.deadletter_topic],
            expected=total,
        )
        wait_for_commits(local_stack, settings.consumer_group, honest)
    finally:
        worker.stop()
        thread.join(timeout=30)

    victim_objects = ObjectStore.from_settings(settings).list(f"heatmaps/{victim}/")
    print(
        f"line isolation: {total} frames sent ({len(hostile_ids)} naming another line), "
        f"{len(verdicts)} verdicts, {len(letters)} dead letters, "
        f"{total - len(verdicts) - len(letters)} lost, "
        f"{len(victim_objects)} objects under the other line's prefix"
    )
    assert {v.frame_id for v in verdicts} == {s.frame_id for s in honest}
    assert all(v.line == line for v in verdicts)
    assert sorted(d.frame_id for d in letters) == sorted(hostile_ids)
    assert {d.reason.value for d in letters} == {"line_mismatch"}
    assert f"kenpin.verdicts.{victim}" not in _topics(local_stack)
    assert victim_objects == []


def test_a_worker_started_before_any_line_judges_the_first_line(
    local_stack, artifact, line_data, monkeypatch
):
    """The worker starts first (nothing matches its pattern), then a camera creates the line."""
    run = f"f{uuid.uuid4().hex[:8]}"
    line = f"{run}-first"
    settings = run_settings(local_stack, artifact, run)
    assert not any(t.startswith(f"kenpin.frames.{run}") for t in _topics(local_stack))
    worker = Worker(settings, load_model(artifact, device="cpu"))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(2)  # the worker looks for lines and finds none
        assert not worker.subscribed
        # the camera command, as an operator runs it on a fresh plant
        for key, value in local_stack.env.items():
            monkeypatch.setenv(key, value)
        source = line_data / "washer" / "test" / "good"
        started = time.monotonic()
        assert worker_cli(["camera", "--line", line, "--source", str(source), "--fps", "0"]) == 0
        sent = len(list(source.glob("*.png")))
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=sent, timeout_s=60
        )
        waited = time.monotonic() - started
    finally:
        worker.stop()
        thread.join(timeout=30)
    print(f"first line: {sent} frames sent, {len(verdicts)} verdicts within {waited:.1f} s")
    assert len({v.frame_id for v in verdicts}) == sent
    assert waited < 30
