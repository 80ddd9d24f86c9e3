"""Parts announced on their own topic, on the REAL local stack: the bridge never reads images.

The camera (`kenpin-worker camera`, a real process) writes each frame to the line's
frames topic and announces the part, headers without the image, on its parts topic.
A real bridge process must take the parts from there: a TIMEOUT for each part nobody
judges, an OK for a part whose verdict comes, each exactly once, and it must never read
the line's frames topic. A verdict of a part that was never announced (a camera that
writes frames only) is published and counted (`UnseenCount`): no TIMEOUT guarded it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from asyncua import ua
from kafka import KafkaProducer

from deploy.local.stack import StackSettings
from schemas.frames import FrameHeaders
from schemas.verdicts import Verdict
from tests.integration.pipeline import create_topics
from tests.integration.test_bridge_restart import stop
from tests.integration.test_opcua_bridge import (
    Received,
    certificates,
    connect,
    free_port,
    part_headers,
    start_bridge,
)

pytestmark = pytest.mark.integration

PARTS = 8


def camera(stack: StackSettings, line: str, folder: Path) -> None:
    """The real camera command: frames, and each part announced (its default)."""
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "camera", "--line", line, "--source", str(folder),
         "--fps", "20", "--count", str(PARTS), "--product", "washer", "--partitions", "1",
         "--part-id-prefix", "T-"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def ok_verdict(headers: list) -> bytes:
    """The verdict a worker would send for the frame with these headers: OK."""
    frame = FrameHeaders.from_kafka_headers(headers)
    verdict = Verdict.for_frame(frame, result="ok", score=0.1, threshold=0.5, model_version="it-1")
    return verdict.to_json()


async def scenario(stack, url, certs, line: str, folder: Path, producer) -> Received:
    client = await connect(url, certs)
    try:
        received = Received()
        sub = await client.create_subscription(10, received)
        nodes = [f"kenpin.{line}.{n}" for n in ("Json", "UnseenCount")]
        await sub.subscribe_data_change(
            [client.get_node(ua.NodeId(n, 2)) for n in nodes], queuesize=1000
        )
        # nobody judges the line: every announced part times out, read from the parts topic
        await asyncio.to_thread(camera, stack, line, folder)
        await received.until(lambda: len(received.outcomes(line)) >= PARTS, 60, "timeouts")

        # a part announced and judged: OK, once
        headers = part_headers(line, "washer", "J-1", 100)
        producer.send(f"kenpin.frames.{line}", key=b"cam-1", value=b"png", headers=headers)
        producer.send(f"kenpin.parts.{line}", key=b"cam-1", value=b"", headers=headers)
        producer.send(f"kenpin.verdicts.{line}", key=b"cam-1", value=ok_verdict(headers))
        # a part never announced (its camera writes frames only): published, counted unseen
        quiet = part_headers(line, "washer", "Q-1", 101)
        producer.send(f"kenpin.frames.{line}", key=b"cam-1", value=b"png", headers=quiet)
        producer.send(f"kenpin.verdicts.{line}", key=b"cam-1", value=ok_verdict(quiet))
        producer.flush(timeout=30)
        await received.until(lambda: len(received.outcomes(line)) >= PARTS + 2, 60, "two OKs")
        await received.until(
            lambda: (received.latest(f"kenpin.{line}.UnseenCount") or 0) >= 1, 30, "unseen"
        )
        await asyncio.sleep(1.0)  # J-1's deadline passes: a second outcome would come now
        return received
    finally:
        await client.disconnect()


def test_the_bridge_takes_parts_from_their_topic_and_never_reads_images(local_stack, tmp_path):
    run = f"p{uuid.uuid4().hex[:8]}"
    other, line = f"{run}-other", f"{run}-l1"  # lines[0] gets the long deadline: not ours
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), np.full((16, 16, 3), 90, np.uint8))
    # the line's topics exist before the bridge starts, as a plant's do: its first discovery
    # finds the parts topic, so the frames topic is never read, not even for a moment
    create_topics(local_stack, [f"kenpin.frames.{line}", f"kenpin.parts.{line}"], partitions=1)
    certs = asyncio.run(certificates(tmp_path))
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/kenpin/"
    log = tmp_path / "bridge.log"
    bridge = start_bridge(local_stack, run, [other, line], port, certs, log)
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
    try:
        received = asyncio.run(scenario(local_stack, url, certs, line, folder, producer))
    except BaseException:
        print(log.read_text()[-6000:])
        raise
    finally:
        producer.close()
        stop(bridge)

    outcomes = [o for o, _ in received.outcomes(line)]
    by_part = {}
    for o in outcomes:
        by_part.setdefault(o["part_id"], []).append(o["verdict"])
    assert by_part == {
        **{f"T-{n}": ["TIMEOUT"] for n in range(1, PARTS + 1)},
        "J-1": ["OK"],
        "Q-1": ["OK"],
    }
    assert received.latest(f"kenpin.{line}.UnseenCount") == 1
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith('{"')]
    read = [p for e in events if e.get("event") == "reading partitions" for p in e["new"]]
    assert f"kenpin.parts.{line}/0" in read
    assert not [p for p in read if p.startswith(f"kenpin.frames.{line}/")]  # no image read
    assert any(e.get("event", "").startswith("verdicts for parts the bridge never") for e in events)
