"""Broker and Redis outages on the real stack: the worker rides them out, no frame is lost.

The broker (Tansu, keeping its topics in S3) is killed by its pid for 20 s while
a camera streams: the worker pauses, retries its verdicts and commits, and
when the broker is back every frame gets its verdict. Redis is stopped for 15 s:
judging goes on with the model in hand, and the heartbeat comes back with it.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from planes.control import ControlPlane
from tests.integration.pipeline import collect_outcomes, create_topics, run_settings, test_images
from tests.integration.releases import Camera, run_id, start_worker, wait_for

BROKER_OUTAGE_S = 20
REDIS_OUTAGE_S = 15


@pytest.fixture
def stack_control(local_stack, tmp_path_factory):
    """The session stack's LocalStack handle, to stop and start its servers by pid."""
    from deploy.local.stack import LocalStack

    for path in tmp_path_factory.getbasetemp().glob("stack*"):
        stack = LocalStack(path)
        if stack.is_running() and stack.settings == local_stack:
            return stack
    pytest.skip("the session stack's state directory was not found")


def _rates(verdicts, start: datetime, end: datetime) -> tuple[float, float, float]:
    first = {}
    for v in verdicts:
        first.setdefault(v.frame_id, v)
    times = [v.decision_time for v in first.values()]
    begin, finish = min(times), max(times)

    def rate(a: datetime, b: datetime) -> float:
        return sum(1 for t in times if a <= t < b) / max((b - a).total_seconds(), 1e-9)

    return rate(begin, start), rate(start, end), rate(end, finish)


def test_verdicts_survive_a_broker_outage(local_stack, stack_control, artifact, line_data):
    run = run_id("b")
    line = f"{run}-l1"
    topic = f"kenpin.frames.{line}"
    settings = run_settings(local_stack, artifact, run, hot_swap=False)
    create_topics(local_stack, [topic], partitions=2)
    running = start_worker(settings, artifact)
    camera = Camera(local_stack.kafka_bootstrap, topic, line, test_images(line_data), fps=4)
    camera.start()
    try:
        wait_for(lambda: running.metrics.verdicts._metrics, 60, "first verdicts")
        time.sleep(5)
        outage_start = datetime.now(UTC)
        stack_control.stop_server("tansu", kill=True)
        time.sleep(BROKER_OUTAGE_S)
        assert running.thread.is_alive()
        stack_control.start_server("tansu")
        outage_end = datetime.now(UTC)
        time.sleep(10)
        camera.stop()
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=len(camera.sent), timeout_s=120
        )
        time.sleep(2)  # duplicates of a replay may still arrive: read once more
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=10**9, timeout_s=3
        )
    finally:
        camera.stop()
        running.stop()
    judged = Counter(v.frame_id for v in verdicts)
    lost = set(camera.sent) - set(judged)
    before, during, after = _rates(verdicts, outage_start, outage_end)
    print(
        f"broker outage {BROKER_OUTAGE_S} s: {len(camera.sent)} frames sent, "
        f"{len(set(judged))} judged, {sum(n - 1 for n in judged.values())} duplicates, "
        f"{len(lost)} lost; verdicts/s before {before:.2f}, during {during:.2f}, "
        f"after {after:.2f}; worker exit code {running.worker.exit_code}"
    )
    assert not lost
    assert running.worker.exit_code == 0


def test_judging_goes_on_while_redis_is_down(local_stack, stack_control, artifact, line_data):
    run = run_id("r")
    line = f"{run}-l1"
    topic = f"kenpin.frames.{line}"
    settings = run_settings(
        local_stack, artifact, run, control_prefix=f"{run}:", heartbeat_interval_s=1.0
    )
    create_topics(local_stack, [topic], partitions=1)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    running = start_worker(settings, artifact)
    camera = Camera(local_stack.kafka_bootstrap, topic, line, test_images(line_data), fps=4)
    camera.start()
    try:
        wait_for(control.heartbeats, 30, "a heartbeat")
        wait_for(lambda: running.metrics.verdicts._metrics, 60, "first verdicts")
        time.sleep(3)
        outage_start = datetime.now(UTC)
        stack_control.stop_server("redis")
        time.sleep(REDIS_OUTAGE_S)
        stack_control.start_server("redis")
        outage_end = datetime.now(UTC)
        # a heartbeat written after the outage proves the way back
        for key in control.redis.scan_iter(match=f"{control.heartbeat_prefix}*"):
            control.redis.delete(key)
        beats = wait_for(control.heartbeats, 30, "a heartbeat after the outage")
        camera.stop()
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=len(camera.sent), timeout_s=60
        )
    finally:
        camera.stop()
        running.stop()
    before, during, after = _rates(verdicts, outage_start, outage_end)
    lost = set(camera.sent) - {v.frame_id for v in verdicts}
    print(
        f"redis outage {REDIS_OUTAGE_S} s: {len(camera.sent)} frames sent, {len(lost)} lost; "
        f"verdicts/s before {before:.2f}, during {during:.2f}, after {after:.2f}; "
        f"heartbeat back from {beats[0].worker_id}"
    )
    assert not lost
    assert during > 0
