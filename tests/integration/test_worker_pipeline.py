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
import uuid
from collections import Counter

from kafka import KafkaProducer

from model.loading import load_model
from planes.settings import settings_env
from planes.storage import ObjectStore
from tests.integration.frames import Sent, produce_frames
from tests.integration.pipeline import (
    collect_outcomes,
    committed_offsets,
    create_topics,
    match,
    run_settings,
    test_images,
    wait_for_commits,
)
from worker.service import Worker


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

    worker = Worker(settings, load_model(artifact, device="cpu"))
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
        "line_mismatch": "line_mismatch",
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
    worker = Worker(settings, load_model(artifact, device="cpu"))
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
        **settings_env(settings.model_copy(update={"log_format": "json"})),
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
