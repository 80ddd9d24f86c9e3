"""Where a part's time goes, camera to PLC: the latency budget, stage by stage.

    python -m deploy.benchmarks.latency_budget --model ARTIFACT --images DIR --product NAME
        [--fps 10] [--seconds 60] [--deadline-ms 500] [--beside "COMMAND"] [--out DIR]

The real path on the local stack (Tansu, SeaweedFS, Redis): one worker process
(`kenpin-worker run` with its defaults: the runtime it chooses, its batch
policy, its fetch wait), one bridge process (`kenpin-bridge opcua`,
Basic256Sha256 with a password, certificates made for the run) and an OPC UA
client of this benchmark's own, subscribed to the line's outcome node as a PLC
is. A camera thread sends the images of --images as parts (part ids, capture
time at send; each announced on the parts topic unless --no-announce) at --fps
for --seconds, after a few warm-up parts whose outcomes are awaited first (model
load and group join are not measured). For every part:

    camera -> worker poll   capture time -> the worker's consumer returns the frame
                            (the camera's send, the broker, the fetch wait)
    decode + batch wait     -> the forward pass of its batch begins
    model                   the forward pass
    verdict produced        -> the verdict record's timestamp (the producer's send)
    bridge + OPC UA         -> the client's data-change notification (broker out,
                            the bridge's fetch, its deadline bookkeeping, OPC UA;
                            parts that got OK / NG)

and the totals capture -> decision (the verdict's own times) and capture -> OPC UA
notification, with p50 / p95 / p99 / max of each, the outcomes each part got
(exactly one is right), how many were TIMEOUT, and a CDF of every stage
(`latency_budget.png` in --out). Stage times come from the `kenpin-stages`
header of each verdict record (`schemas.verdicts.WorkerStages`); every process
runs on this machine, so they share one clock.

--faults causes a broker outage, a worker kill -9 and a hot swap in the measured window
and reports each one's TIMEOUTs, lost parts and recovery (`deploy.benchmarks.latency_faults`).

--beside runs a command for the whole measured window (e.g. a training run,
`nice -n 10 kenpin-trainer train ...`, as `kenpin-trainer serve` lowers its own
priority): the budget with a retrain beside the line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from bridge.settings import BridgeSettings
from deploy.benchmarks.latency_faults import (
    Fault,
    fault_report,
    plot_timeline,
    save_figure,
    timeline,
)
from deploy.demo import wait_until_ready
from deploy.local.processes import free_port
from deploy.local.stack import LocalStack
from deploy.local.tls import opcua_certificates
from model.release import read_manifest
from model.runtime import cpu_description
from model.runtimes import RuntimeChoice
from operations.releases import publish
from planes.control import ControlPlane
from planes.settings import settings_env
from planes.storage import ObjectStore
from schemas.common import utc_now
from schemas.frames import FrameHeaders
from schemas.plc import OPCUA_APPLICATION_URI
from schemas.topics import (
    frames_topic,
    frames_topic_pattern,
    parts_topic,
    parts_topic_pattern,
    verdict_topic,
    verdicts_topic_pattern,
)
from schemas.verdicts import Verdict, WorkerStages
from worker.camera import content_type_for_path, list_images
from worker.settings import WorkerSettings

STAGES = (
    "camera -> worker poll",
    "decode + batch wait",
    "model",
    "verdict produced",
    "bridge + OPC UA",
)
TOTALS = ("capture -> decision", "capture -> OPC UA")
SERVER_URI = OPCUA_APPLICATION_URI
CLIENT_URI = f"{OPCUA_APPLICATION_URI}:latency-budget-client"
NAMESPACE_INDEX = 2  # the bridge's namespace, the first after OPC UA's own
PASSWORD_BYTES = 24
WARM_UP_PARTS = 5
#: The faults --faults can cause, in the order they are caused.
FAULTS = ("broker", "worker", "swap")


@dataclass
class Part:
    """What was seen of one part on its way, on this machine's wall clock (epoch ms)."""

    captured: float
    verdict: Verdict | None = None
    stages: WorkerStages | None = None
    produced: float | None = None  # the verdict record's timestamp
    #: (decision, arrival) by the bridge's outcome sequence: a client that re-subscribes is
    #: sent the node's current value again, which is not a second outcome
    outcomes: dict[int, tuple[str, float]] = field(default_factory=dict)

    def times(self) -> dict[str, float]:
        """Each stage and total in ms that this part reached: the worker's stages once it
        was judged, the bridge's and the PLC's once it got OK / NG there (a TIMEOUT has
        none: its verdict came after the deadline, or never)."""
        if self.verdict is None or self.stages is None or self.produced is None:
            return {}
        s = self.stages
        times = {
            STAGES[0]: s.polled - self.captured,
            STAGES[1]: s.judging - s.polled,
            STAGES[2]: s.judged - s.judging,
            STAGES[3]: self.produced - s.judged,
            TOTALS[0]: self.verdict.decision_time.timestamp() * 1000 - self.captured,
        }
        notified = next((t for d, t in self.outcomes.values() if d in ("OK", "NG")), None)
        if notified is not None:
            times[STAGES[4]] = notified - self.produced
            times[TOTALS[1]] = notified - self.captured
        return times


class Ledger:
    """Every part by frame id, filled from the camera, the verdict tap and the OPC UA client."""

    def __init__(self) -> None:
        self.parts: dict[str, Part] = {}
        self.lock = threading.Lock()

    def sent(self, frame_id: str, captured_ms: float) -> None:
        with self.lock:
            self.parts[frame_id] = Part(captured_ms)

    def part(self, frame_id: str | None) -> Part | None:
        with self.lock:
            return self.parts.get(frame_id or "")


def start_bridge(
    stack: LocalStack, line: str, url: str, certs: dict, password: str, args, log: Path
) -> subprocess.Popen:
    env = settings_env(
        dict(
            kafka_bootstrap=stack.settings.kafka_bootstrap,
            frames_topic_pattern=frames_topic_pattern(line, exact=True),
            parts_topic_pattern=parts_topic_pattern(line, exact=True),
            verdicts_topic_pattern=verdicts_topic_pattern(line, exact=True),
            lines=[line],
            deadline_ms=args.deadline_ms,
            opcua_endpoint=url,
            opcua_application_uri=SERVER_URI,
            opcua_certificate=certs["server.der"],
            opcua_private_key=certs["server.pem"],
            opcua_password=password,
            log_format="json",
        ),
        BridgeSettings,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "opcua"],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def start_worker(stack: LocalStack, line: str, args, port: int, log: Path) -> subprocess.Popen:
    env = settings_env(
        dict(
            model_path=args.model.absolute(),
            device=args.device,
            runtime=args.runtime,
            metrics_port=port,
            log_format="json",
            frames_topic_pattern=frames_topic_pattern(line, exact=True),
            consumer_group=f"latency-{line}",
            late_after_ms=args.deadline_ms,
        ),
        WorkerSettings,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run"],
        env={**os.environ, **stack.settings.env, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def tap_verdicts(bootstrap: str, line: str, ledger: Ledger, stop: threading.Event) -> None:
    """Read the line's verdict topic as the bridge does; note each record's stages."""
    consumer = KafkaConsumer(
        verdict_topic(line),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    verdict = Verdict.from_json(record.value)
                    part = ledger.part(verdict.frame_id)
                    if part is not None:
                        part.verdict = verdict
                        part.stages = WorkerStages.from_kafka_headers(record.headers)
                        part.produced = float(record.timestamp)
    finally:
        consumer.close()


def camera(
    producer: KafkaProducer,
    line: str,
    product: str,
    images: list[Path],
    fps: float,
    count: int,
    ledger: Ledger,
    first_sequence: int,
    announce: bool,
) -> None:
    """`count` parts at `fps` on a fixed schedule; the capture time is the send time. With
    `announce`, each part's headers also go to the parts topic, as `kenpin-worker camera`
    sends them (the bridge then reads no image)."""
    start = time.monotonic()
    for i in range(count):
        delay = start + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        path = images[i % len(images)]
        number = first_sequence + i
        headers = FrameHeaders(
            frame_id=str(uuid.uuid4()),
            part_id=f"P-{number:06d}",
            sequence=number,
            line=line,
            camera="cam-1",
            product=product,
            capture_time=utc_now(),
            content_type=content_type_for_path(path),
        )
        ledger.sent(headers.frame_id, headers.capture_time.timestamp() * 1000)
        kafka_headers = headers.to_kafka_headers()
        producer.send(
            frames_topic(line), value=path.read_bytes(), key=b"cam-1", headers=kafka_headers
        )
        if announce:
            producer.send(parts_topic(line), value=b"", key=b"cam-1", headers=kafka_headers)
    producer.flush()


async def watch(url: str, certs: dict, password: str, line: str, ledger: Ledger, ready, stop):
    """The PLC's side: subscribe to the line's outcome node, note each arrival."""

    class Handler:
        def datachange_notification(self, node, val, data) -> None:
            arrived = time.time() * 1000
            if not val:
                return
            outcome = json.loads(val)
            part = ledger.part(outcome.get("frame_id"))
            if part is not None:
                part.outcomes.setdefault(outcome["sequence"], (outcome["verdict"], arrived))

    client = Client(url, timeout=10)
    client.application_uri = CLIENT_URI
    client.set_user("plc")
    client.set_password(password)
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(certs["client.der"]),
        private_key=str(certs["client.pem"]),
        server_certificate=str(certs["server.der"]),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    deadline = time.monotonic() + 60
    while True:  # the bridge may still be starting
        try:
            await client.connect()
            break
        except (ConnectionError, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
    try:
        # a 10 ms publishing interval, as a PLC polling its inputs every cycle would ask
        # for; keep-alives every 10 s, so a busy second is not taken for a lost subscription
        parameters = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=10,
            RequestedLifetimeCount=3000,
            RequestedMaxKeepAliveCount=1000,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        subscription = await client.create_subscription(parameters, Handler())
        node = client.get_node(ua.NodeId(f"kenpin.{line}.Json", NAMESPACE_INDEX))
        await subscription.subscribe_data_change([node], queuesize=10_000)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
    finally:
        await client.disconnect()


def first_verdict_after(ledger: Ledger, since_ms: float, version: str | None = None) -> float:
    """When the first verdict decided after `since_ms` (of release `version`) was decided;
    waits up to a minute for it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with ledger.lock:
            times = [
                p.verdict.decision_time.timestamp() * 1000
                for p in ledger.parts.values()
                if p.verdict is not None
                and (version is None or p.verdict.model_version == version)
                and p.verdict.decision_time.timestamp() * 1000 >= since_ms
            ]
        if times:
            return min(times)
        time.sleep(0.05)
    raise TimeoutError(f"no verdict{f' of {version}' if version else ''} within a minute")


def cause_faults(stack: LocalStack, ledger: Ledger, args, processes: dict, restart_worker,
                 window_s: float) -> list[Fault]:  # fmt: skip
    """The faults of `args.faults` (broker outage, worker kill, hot swap), in that order,
    spread evenly over the window (from now): one alone at 1/2, all three at 1/4, 2/4 and
    3/4; `processes["worker"]` is replaced by the restarted worker."""
    started, faults = time.monotonic(), []
    chosen = [name for name in FAULTS if name in args.faults]
    moments = iter(np.arange(1, len(chosen) + 1) / (len(chosen) + 1))

    def at() -> None:
        fraction = next(moments)
        time.sleep(max(0.0, started + window_s * fraction - time.monotonic()))

    if "broker" in chosen:
        faults.append(broker_outage(stack, args.outage_s, at))
    if "worker" in chosen:
        faults.append(worker_kill(ledger, args, processes, restart_worker, at))
    if "swap" in chosen:
        faults.append(hot_swap(stack, ledger, args.model, at))
    return faults


def broker_outage(stack: LocalStack, outage_s: float, at) -> Fault:
    """The broker killed (SIGKILL) at the next moment and started again `outage_s` later."""
    at()
    outage = Fault("broker outage", time.time() * 1000)
    stack.stop_server("tansu", kill=True)
    time.sleep(outage_s)
    stack.start_server("tansu")
    outage.ended = time.time() * 1000
    print(f"  broker killed, answering again after {(outage.ended - outage.began) / 1000:.1f} s",
          flush=True)  # fmt: skip
    return outage


def worker_kill(ledger: Ledger, args, processes: dict, restart_worker, at) -> Fault:
    """The worker killed (SIGKILL) at the next moment and started again at once."""
    at()
    killed = Fault("worker killed", time.time() * 1000)
    processes["worker"].kill()
    processes["worker"].wait(30)
    processes["worker"] = restart_worker()
    wait_until_ready(args.metrics_port, processes["worker"])
    ready = time.time() * 1000
    killed.ended = first_verdict_after(ledger, ready)
    print(f"  worker killed: ready again after {(ready - killed.began) / 1000:.1f} s, first "
          f"verdict {(killed.ended - ready) / 1000:.1f} s after ready", flush=True)  # fmt: skip
    return killed


def hot_swap(stack: LocalStack, ledger: Ledger, model: Path, at) -> Fault:
    """The same artifact published as a new release at the next moment."""
    at()
    os.environ.update(stack.settings.env)  # the plant's settings, as the worker reads them
    settings = WorkerSettings()
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    manifest = read_manifest(model)
    new = manifest.model_copy(update={"version": f"{manifest.version}-swap{uuid.uuid4().hex[:4]}"})
    swap = Fault("hot swap", time.time() * 1000)
    publish(store, control, model, new)
    swap.ended = first_verdict_after(ledger, swap.began, new.version)
    print(f"  hot swap: first verdict of the new release "
          f"{(swap.ended - swap.began) / 1000:.1f} s after publishing", flush=True)  # fmt: skip
    return swap


def summarise(parts: list[Part]) -> dict[str, dict[str, float]]:
    """p50 / p95 / p99 / max of each stage and total, over the parts that reached it."""
    rows = [p.times() for p in parts]
    table = {}
    for name in (*STAGES, *TOTALS):
        values = np.array([r[name] for r in rows if name in r])
        if not len(values):
            continue
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        table[name] = {
            "parts": len(values),
            "p50": p50,
            "p95": p95,
            "p99": p99,
            "max": float(values.max()),
        }
    return table


def plot(parts: list[Part], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p.times() for p in parts]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name in (*STAGES, *TOTALS):
        values = np.sort([max(r[name], 0.01) for r in rows if name in r])
        if len(values):
            style = "-" if name in STAGES else "--"
            axes.plot(values, np.arange(1, len(values) + 1) / len(values), style, label=name)
    axes.set_xscale("log")
    axes.set_xlabel("ms (log scale)")
    axes.set_ylabel("share of parts")
    save_figure(figure, axes, path, title, legend="lower right")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="artifact folder")
    parser.add_argument("--images", type=Path, required=True, help="folder of the parts' images")
    parser.add_argument("--product", required=True, help="the product the images are of")
    parser.add_argument("--fps", type=float, default=10.0, help="parts per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--deadline-ms", type=float, default=500.0, help="the line's deadline")
    parser.add_argument("--device", default="cpu", help="the worker's device: cpu or cuda")
    parser.add_argument(
        "--runtime",
        default=WorkerSettings.model_fields["runtime"].default,
        choices=get_args(RuntimeChoice),
        help="the worker's runtime (default: the worker's own default)",
    )
    parser.add_argument(
        "--broker-storage",
        default="s3",
        choices=["s3", "memory"],
        help="the broker's storage: s3 (durable, on the local S3 server, which then shares "
        "these cores) or memory",
    )
    parser.add_argument(
        "--broker-retention-s",
        type=float,
        default=10.0,
        help="with s3 storage: the local stack deletes consumed record batches older than "
        "this (Tansu applies no retention and slows down with every batch it holds); "
        "0: keep all",
    )
    parser.add_argument(
        "--announce",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the camera announces each part on the parts topic (the bridge reads no images), "
        "as kenpin-worker camera does; --no-announce: the bridge reads the frames",
    )
    parser.add_argument("--beside", help="a command to run beside the line while measuring")
    parser.add_argument(
        "--faults",
        nargs="?",
        const=",".join(FAULTS),
        type=lambda text: [name for name in text.split(",") if name],
        help=f"faults in the measured window, comma-separated, of {','.join(FAULTS)} "
        "(all three when given alone; needs the durable broker)",
    )
    parser.add_argument("--outage-s", type=float, default=5.0, help="the broker outage's length")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-latency"))
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    images = list_images(args.images)
    if not images:
        parser.error(f"no images under {args.images}")
    unknown = set(args.faults or ()) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; of {', '.join(FAULTS)}")
    if args.faults and args.broker_storage == "memory":
        parser.error("--faults needs --broker-storage s3: a broker in memory forgets its records")
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    print(f"cpu: {cpu_description()}", flush=True)

    line = f"lat{uuid.uuid4().hex[:6]}"
    ledger = Ledger()
    password = os.urandom(PASSWORD_BYTES).hex()
    certs = asyncio.run(opcua_certificates(out, SERVER_URI, CLIENT_URI))
    retention = args.broker_retention_s or None
    with LocalStack(
        out / "stack", broker_storage=args.broker_storage, broker_retention_s=retention
    ) as stack:
        bootstrap = stack.settings.kafka_bootstrap
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        topics = [frames_topic(line)] + ([parts_topic(line)] if args.announce else [])
        admin.create_topics([NewTopic(topic, 1, 1) for topic in topics])
        admin.close()
        args.metrics_port, url = free_port(), f"opc.tcp://127.0.0.1:{free_port()}/kenpin/"
        worker = start_worker(stack, line, args, args.metrics_port, out / "worker.log")
        processes = {"worker": worker}
        faults: list[Fault] = []
        bridge = start_bridge(stack, line, url, certs, password, args, out / "bridge.log")
        stop, ready = threading.Event(), threading.Event()
        client = threading.Thread(
            target=asyncio.run, args=(watch(url, certs, password, line, ledger, ready, stop),)
        )
        tap = threading.Thread(target=tap_verdicts, args=(bootstrap, line, ledger, stop))
        beside = None
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        try:
            client.start()
            tap.start()
            wait_until_ready(args.metrics_port, worker)
            if not ready.wait(60):
                raise TimeoutError("the OPC UA client did not subscribe; see bridge.log")
            time.sleep(2)  # the bridge reads the frame topic from its end once it has it
            camera(
                producer, line, args.product, images, 2.0, WARM_UP_PARTS, ledger, 1, args.announce
            )
            warm = list(ledger.parts.values())
            deadline = time.monotonic() + 120
            while not all(p.outcomes for p in warm) and time.monotonic() < deadline:
                time.sleep(0.2)
            with ledger.lock:
                ledger.parts.clear()
            if args.beside:
                beside = subprocess.Popen(
                    shlex.split(args.beside),
                    stdout=(out / "beside.log").open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                time.sleep(5)  # let it get going before the window opens
            count = int(args.fps * args.seconds)
            print(
                f"measuring {count} parts at {args.fps:g}/s"
                + (f" with beside it: {args.beside}" if beside else ""),
                flush=True,
            )
            started = time.monotonic()
            sender = threading.Thread(
                target=camera,
                args=(
                    producer,
                    line,
                    args.product,
                    images,
                    args.fps,
                    count,
                    ledger,
                    1000,
                    args.announce,
                ),  # fmt: skip
            )
            sender.start()
            if args.faults:
                restart = lambda: start_worker(  # noqa: E731
                    stack, line, args, args.metrics_port, out / "worker-restarted.log"
                )
                faults = cause_faults(stack, ledger, args, processes, restart, args.seconds)
            while sender.is_alive():
                sender.join(10)
                now = list(ledger.parts.values())
                print(
                    f"  {time.monotonic() - started:5.0f} s: {len(now)} sent, "
                    f"{sum(p.verdict is not None for p in now)} judged, "
                    f"{sum(bool(p.outcomes) for p in now)} decided at the PLC",
                    flush=True,
                )
            time.sleep(args.deadline_ms / 1000 + 2)  # the last parts' outcomes, or TIMEOUT
        finally:
            if beside is not None and beside.poll() is None:
                os.killpg(beside.pid, signal.SIGTERM)
                beside.wait(30)
            stop.set()
            producer.close()
            for process in (processes["worker"], bridge):
                process.send_signal(signal.SIGTERM)
                process.wait(60)
            client.join(30)
            tap.join(30)

    parts = list(ledger.parts.values())
    table = summarise(parts)
    outcomes = Counter(d for p in parts for d, _ in p.outcomes.values())
    per_part = Counter(len(p.outcomes) for p in parts)
    judged = sum(p.verdict is not None for p in parts)
    print(
        f"\n{len(parts)} parts at {args.fps:g}/s, deadline {args.deadline_ms:g} ms, "
        f"runtime {args.runtime}, broker storage {args.broker_storage}"
        + (f" (retention {retention:g} s)" if retention and args.broker_storage == "s3" else "")
        + ", "
        f"bridge reads {'parts' if args.announce else 'frames'}"
        + (f", beside: {args.beside}" if args.beside else "")
    )
    print(f"verdicts on the verdict topic: {judged}")
    print(f"outcomes: {dict(outcomes)}; outcomes per part: {dict(sorted(per_part.items()))}")
    print("\n| stage | parts | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['parts']} | {row['p50']:.1f} | {row['p95']:.1f} | "
              f"{row['p99']:.1f} | {row['max']:.1f} |")  # fmt: skip
    if faults:
        print(
            "\n| fault | parts in its span | TIMEOUT | lost | second outcomes | fault lasted s "
            "| last TIMEOUT captured s after it ended | p99 before / around ms |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in fault_report(parts, faults, args.deadline_ms):
            around = (f"{row['p99_before_ms']:.1f} / {row['p99_around_ms']:.1f}"
                      if row.get("p99_around_ms") else "")  # fmt: skip
            late = row["last_timeout_after_end_s"]
            print(f"| {row['fault']} | {row['parts']} | {row['timeout']} | {row['lost']} | "
                  f"{row['second_outcomes']} | {row['fault_s']:.1f} | "
                  f"{'' if late is None else f'{late:.1f}'} | {around} |")  # fmt: skip
        print(
            "\n| captured from s | parts | TIMEOUT | no outcome | capture -> decision p50 / max |"
        )
        print("|---|---|---|---|---|")
        for row in timeline(parts):
            p50, top = row["decision_p50_ms"], row["decision_max_ms"]
            waits = "" if p50 is None else f"{p50:.0f} / {top:.0f} ms"
            print(f"| {row['from_s']:.0f} | {row['parts']} | {row['timeout']} | "
                  f"{row['no_outcome']} | {waits} |")  # fmt: skip
    title = (
        f"camera to PLC, {len(parts)} parts at {args.fps:g}/s; runtime {args.runtime}, broker "
        f"storage {args.broker_storage}, bridge reads {'parts' if args.announce else 'frames'}"
        + ("; a command beside the line" if args.beside else "")
    )
    plot(parts, out / "latency_budget.png", title)
    print(f"\nCDF per stage: {out / 'latency_budget.png'}")
    if faults:
        plot_timeline(parts, faults, args.deadline_ms, out / "latency_faults.png", title)
        print(f"each part through the faults: {out / 'latency_faults.png'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_description(),
                    "fps": args.fps,
                    "runtime": args.runtime,
                    "broker_storage": args.broker_storage,
                    "broker_retention_s": retention,
                    "announce": args.announce,
                    "parts": len(parts),
                    "verdicts": judged,
                    "outcomes": dict(outcomes),
                    "outcomes_per_part": {str(k): v for k, v in per_part.items()},
                    "stages": table,
                    "beside": args.beside,
                    "faults": fault_report(parts, faults, args.deadline_ms) if faults else None,
                    "timeline": timeline(parts, 5_000.0 if faults else 30_000.0),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
