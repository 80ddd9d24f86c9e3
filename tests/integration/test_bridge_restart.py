"""A restarted bridge on the REAL local stack: no outcome replayed, none twice for a part.

This test plays the camera and the worker (frames and their verdicts, produced as they
produce them) against a real broker and a real bridge process, read by a real OPC UA
client. The bridge is stopped mid-stream and started again while parts keep coming;
an old verdict is replayed onto the verdict topic after the restart, as a restarted
worker replays what it had not committed. The second bridge must publish outcomes only
of parts captured after it started, each exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid

import pytest
from asyncua import ua
from kafka import KafkaProducer

from schemas.frames import FrameHeaders
from schemas.verdicts import Verdict
from tests.integration.pipeline import create_topics
from tests.integration.test_opcua_bridge import (
    Received,
    certificates,
    connect,
    free_port,
    part_headers,
    start_bridge,
)

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"  # the bridge reads frames for their headers only


def produce_part(producer: KafkaProducer, line: str, part: str, n: int) -> Verdict:
    """A frame and, 30 ms later, its verdict, as a camera and a worker would send them."""
    headers = part_headers(line, "washer", part, n)
    producer.send(f"kenpin.frames.{line}", key=b"cam-1", value=PNG, headers=headers)
    time.sleep(0.03)
    verdict = Verdict.for_frame(
        FrameHeaders.from_kafka_headers(headers),
        result="ok",
        score=0.1,
        threshold=0.5,
        model_version="it-1",
    )
    producer.send(f"kenpin.verdicts.{line}", key=b"cam-1", value=verdict.to_json())
    producer.flush(timeout=30)
    return verdict


def stop(bridge: subprocess.Popen) -> None:
    bridge.send_signal(signal.SIGTERM)
    try:
        bridge.wait(timeout=20)
    except subprocess.TimeoutExpired:
        bridge.kill()
        bridge.wait()


async def watch(url: str, certs, line: str):
    client = await connect(url, certs)
    received = Received()
    sub = await client.create_subscription(10, received)
    nodes = [f"kenpin.{line}.{n}" for n in ("Json", "StaleCount")] + ["kenpin.Bridge.Partitions"]
    await sub.subscribe_data_change(
        [client.get_node(ua.NodeId(n, 2)) for n in nodes], queuesize=1000
    )
    await received.until(
        lambda: (received.latest("kenpin.Bridge.Partitions") or 0) >= 2, 60, "partitions"
    )
    return client, received


def test_a_restarted_bridge_replays_nothing(local_stack, tmp_path):
    run = f"r{uuid.uuid4().hex[:8]}"
    other, line = f"{run}-other", f"{run}-l1"  # lines[0] gets the long deadline: not ours
    create_topics(local_stack, [f"kenpin.frames.{line}", f"kenpin.verdicts.{line}"], partitions=1)
    certs = asyncio.run(certificates(tmp_path))
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/kenpin/"
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")

    async def first_bridge() -> list[dict]:
        client, received = await watch(url, certs, line)
        try:
            for n in range(1, 21):
                await asyncio.to_thread(produce_part, producer, line, f"A-{n:03d}", n)
            await received.until(lambda: len(received.outcomes(line)) >= 20, 60, "20 outcomes")
            return [o for o, _ in received.outcomes(line)]
        finally:
            await client.disconnect()

    async def second_bridge(old: Verdict) -> tuple[list[dict], Received]:
        client, received = await watch(url, certs, line)
        try:
            # a restarted worker replays a verdict of a part from before the restart
            producer.send(f"kenpin.verdicts.{line}", key=b"cam-1", value=old.to_json())
            for n in range(41, 61):
                await asyncio.to_thread(produce_part, producer, line, f"C-{n:03d}", n)
            await received.until(lambda: len(received.outcomes(line)) >= 20, 60, "20 outcomes")
            await received.until(
                lambda: (received.latest(f"kenpin.{line}.StaleCount") or 0) >= 1, 30, "stale"
            )
            await asyncio.sleep(1.5)  # anything replayed late would arrive by now
            return [o for o, _ in received.outcomes(line)], received
        finally:
            await client.disconnect()

    log_a, log_b = tmp_path / "bridge-a.log", tmp_path / "bridge-b.log"
    bridge = start_bridge(local_stack, run, [other, line], port, certs, log_a)
    try:
        first = asyncio.run(first_bridge())
    finally:
        stop(bridge)
    # parts keep coming while no bridge runs: the PLC's watchdog rejects them
    while_down = [produce_part(producer, line, f"B-{n:03d}", n) for n in range(21, 31)]
    time.sleep(1.0)  # more than the line's deadline: every part before it is gone
    bridge = start_bridge(local_stack, run, [other, line], port, certs, log_b)
    try:
        second, received = asyncio.run(second_bridge(while_down[0]))
    except BaseException:
        print(log_b.read_text()[-6000:])
        raise
    finally:
        stop(bridge)
        producer.close()

    assert sorted(o["part_id"] for o in first) == [f"A-{n:03d}" for n in range(1, 21)]
    parts = [o["part_id"] for o in second]
    print(
        f"\nafter the restart: {len(parts)} outcomes, stale "
        f"{received.latest(f'kenpin.{line}.StaleCount')}"
    )
    assert sorted(parts) == [f"C-{n:03d}" for n in range(41, 61)]  # nothing from before
    assert len(set(parts)) == len(parts)  # none twice
    assert [o["sequence"] for o in second] == list(range(1, 21))
    assert all(o["verdict"] == "OK" for o in second)
