"""The PLC bridge on the REAL local stack, read by a real OPC UA client over Basic256Sha256.

A camera streams parts with part ids on two lines; a worker judges one line,
none judges the other. An asyncua client, subscribed to the bridge's nodes,
must get OK/NG for every judged part with the right part id, REJECTED_INPUT for
a corrupt frame, TIMEOUT for every part of the line without a worker within its
deadline, nothing for a replayed or a late verdict (only their counters move),
and a refusal for a wrong password or an anonymous login.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.local.tls import opcua_certificates
from model.loading import load_model
from schemas.deadletters import DeadLetter
from schemas.frames import FrameHeaders
from schemas.verdicts import Verdict
from tests.integration.frames import headers_for
from tests.integration.pipeline import create_topics, run_settings, test_images
from worker.service import Worker

DEADLINE_MS = 500.0  # the line without a worker
JUDGED_DEADLINE_MS = 20_000.0  # the judged line: a worker on 2 busy cores must never miss it
PASSWORD = "correct horse battery staple"
SERVER_URI, CLIENT_URI = "urn:kenpin:bridge", "urn:kenpin:test-client"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def certificates(folder: Path) -> dict[str, Path]:
    return await opcua_certificates(folder, SERVER_URI, CLIENT_URI)


def client_for(url: str, certs: dict[str, Path], user: str | None, password: str | None) -> Client:
    client = Client(url, timeout=10)
    client.application_uri = CLIENT_URI
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    return client


async def secure(client: Client, certs: dict[str, Path]) -> Client:
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(certs["client.der"]),
        private_key=str(certs["client.pem"]),
        server_certificate=str(certs["server.der"]),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    return client


class Received:
    """Every value the subscription delivers, with the client's monotonic time of arrival."""

    def __init__(self) -> None:
        self.values: list[tuple[str, object, float]] = []  # (node id string, value, time)
        self.changed = asyncio.Event()

    def datachange_notification(self, node, val, data) -> None:
        self.values.append((node.nodeid.Identifier, val, time.monotonic()))
        self.changed.set()

    def outcomes(self, line: str) -> list[tuple[dict, float]]:
        return [
            (json.loads(v), t) for nid, v, t in self.values if nid == f"kenpin.{line}.Json" and v
        ]

    def latest(self, nid: str) -> object:
        return next((v for n, v, _ in reversed(self.values) if n == nid), None)

    async def until(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


def start_bridge(
    stack, run: str, lines: list[str], port: int, certs, log: Path
) -> subprocess.Popen:
    env = {
        **os.environ,
        "KENPIN_BRIDGE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "KENPIN_BRIDGE_FRAMES_TOPIC_PATTERN": rf"^kenpin\.frames\.{run}-.*",
        "KENPIN_BRIDGE_PARTS_TOPIC_PATTERN": rf"^kenpin\.parts\.{run}-.*",
        "KENPIN_BRIDGE_VERDICTS_TOPIC_PATTERN": rf"^kenpin\.verdicts\.{run}-.*",
        "KENPIN_BRIDGE_DEADLETTER_TOPIC": f"kenpin.deadletter.{run}",
        "KENPIN_BRIDGE_METADATA_MAX_AGE_MS": "500",
        "KENPIN_BRIDGE_DEADLINE_MS": str(DEADLINE_MS),
        "KENPIN_BRIDGE_LINE_DEADLINES_MS": json.dumps({lines[0]: JUDGED_DEADLINE_MS}),
        "KENPIN_BRIDGE_LINES": json.dumps(lines),
        "KENPIN_BRIDGE_OPCUA_ENDPOINT": f"opc.tcp://127.0.0.1:{port}/kenpin/",
        "KENPIN_BRIDGE_OPCUA_CERTIFICATE": str(certs["server.der"]),
        "KENPIN_BRIDGE_OPCUA_PRIVATE_KEY": str(certs["server.pem"]),
        "KENPIN_BRIDGE_OPCUA_PASSWORD": PASSWORD,
        "KENPIN_BRIDGE_LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "opcua"],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def send(producer: KafkaProducer, topic: str, value: bytes, headers) -> float:
    """Produce one frame and wait for the broker; returns the monotonic time it was sent."""
    sent_at = time.monotonic()
    producer.send(topic, key=b"cam-1", value=value, headers=headers).get(timeout=30)
    return sent_at


def part_headers(line: str, product: str, part_id: str, sequence: int) -> list:
    frame = FrameHeaders.from_kafka_headers(headers_for(line, product))
    return frame.model_copy(update={"part_id": part_id, "sequence": sequence}).to_kafka_headers()


def test_plc_gets_one_outcome_per_part_in_time(local_stack, artifact, line_data, tmp_path):
    run = f"b{uuid.uuid4().hex[:8]}"
    judged, held = f"{run}-judged", f"{run}-held"
    create_topics(local_stack, [f"kenpin.frames.{judged}", f"kenpin.frames.{held}"], partitions=1)
    certs = asyncio.run(certificates(tmp_path))
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/kenpin/"
    bridge = start_bridge(local_stack, run, [judged, held], port, certs, tmp_path / "bridge.log")
    settings = run_settings(
        local_stack, artifact, run, frames_topic_pattern=rf"^kenpin\.frames\.{judged}$"
    )
    worker = Worker(settings, load_model(artifact, device="cpu"))
    worker_thread = threading.Thread(target=worker.run, daemon=True)
    worker_thread.start()
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
    try:
        asyncio.run(scenario(local_stack, url, certs, producer, line_data, run))
    except BaseException:
        print((tmp_path / "bridge.log").read_text()[-6000:])
        raise
    finally:
        producer.close()
        worker.stop()
        worker_thread.join(timeout=30)
        bridge.send_signal(signal.SIGTERM)
        try:
            bridge.wait(timeout=20)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait()
    log = (tmp_path / "bridge.log").read_text()
    assert bridge.returncode == 0, log[-3000:]
    own = [json.loads(line) for line in log.splitlines() if line.startswith('{"')]
    own = [e for e in own if str(e.get("logger", "")).startswith("bridge")]
    assert not [e for e in own if e["level"] == "error"], log[-3000:]
    assert any(e["event"] == "bridge stopped" for e in own)  # SIGTERM: a clean stop


async def connect(url: str, certs, user: str | None = "plc", password: str | None = PASSWORD):
    client = await secure(client_for(url, certs, user, password), certs)
    deadline = time.monotonic() + 30
    while True:  # the bridge process may still be starting
        try:
            await client.connect()
            return client
        except (ConnectionError, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def scenario(stack, url, certs, producer, line_data, run: str) -> None:
    judged, held = f"{run}-judged", f"{run}-held"
    client = await connect(url, certs)
    try:
        assert await client.get_namespace_index("urn:kenpin:plc") == 2
        received = Received()
        sub = await client.create_subscription(10, received)
        watched = [
            f"kenpin.{line}.{name}"
            for line in (judged, held)
            for name in ("Json", "Sequence", "DuplicateCount", "LateCount")
        ] + ["kenpin.Bridge.Partitions"]
        await sub.subscribe_data_change(
            [client.get_node(ua.NodeId(n, 2)) for n in watched], queuesize=1000
        )
        # both frame topics are read (from their end) once the bridge says so
        await received.until(
            lambda: (received.latest("kenpin.Bridge.Partitions") or 0) >= 2, 60, "partitions"
        )
        images = test_images(line_data)
        judged_topic = f"kenpin.frames.{judged}"

        # warm-up: the worker joins its group and loads its model; not measured
        await asyncio.to_thread(
            send,
            producer,
            judged_topic,
            images[0][0].read_bytes(),
            part_headers(judged, images[0][1], "WARM-0", 0),
        )
        await received.until(lambda: received.outcomes(judged), 60, "the warm-up verdict")

        sent_at: dict[str, float] = {}
        for n, (path, product) in enumerate(images[:10], start=1):
            part = f"J-{n:04d}"
            sent_at[part] = await asyncio.to_thread(
                send,
                producer,
                judged_topic,
                path.read_bytes(),
                part_headers(judged, product, part, n),
            )
            await asyncio.sleep(0.1)
        corrupt = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        await asyncio.to_thread(
            send, producer, judged_topic, corrupt, part_headers(judged, images[0][1], "J-BAD", 99)
        )
        held_sent: dict[str, float] = {}
        for n, (path, product) in enumerate(images[:4], start=1):
            part = f"H-{n:04d}"
            held_sent[part] = await asyncio.to_thread(
                send,
                producer,
                f"kenpin.frames.{held}",
                path.read_bytes(),
                part_headers(held, product, part, n),
            )

        expected_judged = {*sent_at, "J-BAD"}
        await received.until(
            lambda: {o["part_id"] for o, _ in received.outcomes(judged)} >= expected_judged,
            90,
            "an outcome for every judged part",
        )
        await received.until(
            lambda: {o["part_id"] for o, _ in received.outcomes(held)} >= set(held_sent),
            30,
            "a TIMEOUT for every held part",
        )

        # judged parts: OK/NG as the worker published them on Kafka, one each, in sequence
        kafka_verdicts = [
            Verdict.from_json(value)
            for value in await asyncio.to_thread(read_values, stack, f"kenpin.verdicts.{judged}")
        ]
        by_part = {v.part_id: v for v in kafka_verdicts}
        outcomes = received.outcomes(judged)
        assert [o["sequence"] for o, _ in outcomes] == list(range(1, len(outcomes) + 1))
        per_part = {o["part_id"]: (o, t) for o, t in outcomes}
        assert len(per_part) == len(outcomes), "a part got two outcomes"
        for part in sent_at:
            outcome, _ = per_part[part]
            assert outcome["verdict"] == by_part[part].result.upper(), part
            assert outcome["frame_id"] == by_part[part].frame_id
            assert outcome["capture_sequence"] == by_part[part].sequence == int(part[2:])
        bad, _ = per_part["J-BAD"]
        assert (bad["verdict"], bad["reason"], bad["capture_sequence"]) == (
            "REJECTED_INPUT",
            "corrupt_image",
            99,
        )
        # ... as the worker's dead letter says: the part identity travels in it, unchanged
        [letter] = [
            DeadLetter.from_json(value)
            for value in await asyncio.to_thread(read_values, stack, f"kenpin.deadletter.{run}")
        ]
        assert (letter.part_id, letter.sequence, letter.frame_id) == ("J-BAD", 99, bad["frame_id"])
        # the other variables of the last outcome agree with its Json
        last, _ = outcomes[-1]
        line_node = f"kenpin.{judged}"
        assert (
            await client.get_node(ua.NodeId(f"{line_node}.PartId", 2)).read_value()
            == last["part_id"]
        )
        assert (
            await client.get_node(ua.NodeId(f"{line_node}.Sequence", 2)).read_value()
            == last["sequence"]
        )
        # a PLC that polls finds the parts decided since its last read in the ring, newest first
        ring = await client.get_node(ua.NodeId(f"{line_node}.RecentPartId", 2)).read_value()
        assert ring[:3] == [o["part_id"] for o, _ in reversed(outcomes[-3:])]

        latencies = sorted((per_part[p][1] - sent_at[p]) * 1000 for p in sent_at)
        print(
            f"\nframe -> OPC UA value latency over {len(latencies)} parts: "
            f"p50 {statistics.median(latencies):.0f} ms, "
            f"p99 {latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]:.0f} ms "
            f"(max {latencies[-1]:.0f} ms)"
        )

        # held parts: TIMEOUT each, not before the deadline, within deadline + 100 ms on the
        # bridge's clock (it measures from seeing the frame: waited_ms)
        waited = []
        for o, t in received.outcomes(held):
            assert o["verdict"] == "TIMEOUT" and o["reason"] == "deadline", o
            assert o["deadline_ms"] == DEADLINE_MS
            assert (t - held_sent[o["part_id"]]) * 1000 >= DEADLINE_MS
            waited.append(o["waited_ms"])
        assert len(waited) == len(held_sent)
        print(
            f"TIMEOUT after the bridge saw the frame: {', '.join(f'{w:.0f}' for w in waited)} ms "
            f"(deadline {DEADLINE_MS:.0f} ms)"
        )
        # never before the deadline (1 ns of float rounding aside), at most 100 ms after it
        assert all(DEADLINE_MS - 1e-6 <= w <= DEADLINE_MS + 100 for w in waited), waited

        # a replayed verdict: the duplicate counter moves, the sequence does not
        sequence = await client.get_node(ua.NodeId(f"{line_node}.Sequence", 2)).read_value()
        replay = kafka_verdicts[0]
        await asyncio.to_thread(
            lambda: producer.send(
                f"kenpin.verdicts.{judged}", key=b"cam-1", value=replay.to_json()
            ).get(timeout=30)
        )
        await received.until(
            lambda: received.latest(f"{line_node}.DuplicateCount") == 1, 30, "the replay counted"
        )
        # a verdict after its part's TIMEOUT: counted late, publishes nothing
        late_part = received.outcomes(held)[0][0]
        late = Verdict.model_validate(
            replay.model_dump()
            | {"frame_id": late_part["frame_id"], "line": held, "part_id": late_part["part_id"]}
        )
        create_topics(stack, [f"kenpin.verdicts.{held}"], partitions=1)
        await asyncio.to_thread(
            lambda: producer.send(f"kenpin.verdicts.{held}", value=late.to_json()).get(timeout=30)
        )
        await received.until(
            lambda: received.latest(f"kenpin.{held}.LateCount") == 1, 30, "the late verdict"
        )
        assert await client.get_node(ua.NodeId(f"{line_node}.Sequence", 2)).read_value() == sequence
        assert len(received.outcomes(judged)) == sequence
        assert len(received.outcomes(held)) == len(held_sent)
    finally:
        await client.disconnect()

    # bad credentials: refused, and so is a client without any
    for user, password in (("plc", "wrong"), ("intruder", PASSWORD), (None, None)):
        with pytest.raises(ua.UaError):
            intruder = await secure(client_for(url, certs, user, password), certs)
            await intruder.connect()


def read_values(stack, topic: str) -> list[bytes]:
    """Every record value of `topic`, from its beginning to its end now."""
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        values = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            consumer.position(tp) < end for tp, end in ends.items()
        ):
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()
