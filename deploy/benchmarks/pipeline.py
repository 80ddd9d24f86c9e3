"""Whole-path throughput and latency next to the bare model, in one run.

    python -m deploy.benchmarks.pipeline --model ARTIFACT --source DIR [--batch 16]

1. Bare model: `InspectionModel.judge` on prepared frames at the batch size:
   the ceiling the pipeline is measured against.
2. Throughput: a backlog of frames is produced first, then a worker process
   (`kenpin-worker run`, the real thing) drains it through the local stack:
   Kafka in, decode, batch, model, verdicts out (acks=all), NG heatmaps and
   originals to S3, offsets committed. Frames/s = verdicts / (last decision -
   first decision), so start-up and group join are not counted.
3. Latency: a camera streams at a steady rate below capacity; frame->verdict
   p50/p99 from the verdicts' own capture and decision times.
The frames are the real images of --source (an MVTec-layout folder), so the
NG share, and with it the heatmap work, is what that data gives.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from deploy.demo import wait_until_ready
from deploy.local.processes import free_port
from deploy.local.stack import LocalStack
from schemas.settings import settings_env
from schemas.topics import frames_topic, frames_topic_pattern, verdict_topic
from trainer.learning.data import discover, read_rgb
from worker.camera import stream_folder
from worker.model.release import load_model
from worker.settings import WorkerSettings


def bare_model(
    model_path: Path, images: list[Path], batch: int, precision: str, seconds: float
) -> float:
    model = load_model(model_path, device="cpu", precision=precision)
    frames = [read_rgb(p, model.image_size) for p in images[:batch]]
    model.judge(frames)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.judge(frames)
        done += len(frames)
    return done / (time.perf_counter() - started)


def collect(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list:
    from schemas.verdicts import Verdict

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    verdicts: list[Verdict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(verdicts) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                verdicts += [Verdict.from_json(r.value) for r in records]
    finally:
        consumer.close()
    return verdicts


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", type=Path, required=True, help="MVTec-layout dataset root")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--frames", type=int, default=480, help="backlog size")
    parser.add_argument(
        "--latency-fps",
        type=float,
        default=0.0,
        help="steady camera rate for the latency run (default: 60%% of measured)",
    )
    parser.add_argument("--latency-frames", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pipeline"))
    parser.add_argument(
        "--broker-storage",
        default="s3",
        choices=["s3", "memory"],
        help="Tansu's storage: s3 (durable, on the local SeaweedFS, which then "
        "shares these cores) or memory",
    )
    args = parser.parse_args(argv)

    products = [p for p in discover(args.source) if p.test]
    images = [item.path for p in products for item in p.test]
    print(
        f"frames: {len(images)} test images of {', '.join(p.name for p in products)}; "
        f"batch {args.batch}, {args.precision}, torch threads 2 (2-core CPU)",
        flush=True,
    )

    bare = bare_model(args.model, images, args.batch, args.precision, seconds=20)
    print(f"bare model: {bare:.1f} frames/s", flush=True)

    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    stack_dir = out / f"stack-{uuid.uuid4().hex[:6]}"
    with LocalStack(stack_dir, broker_storage=args.broker_storage) as stack:
        s = stack.settings
        run = uuid.uuid4().hex[:6]
        worker_settings = dict(
            model_path=args.model.absolute(),
            device="cpu",
            precision=args.precision,
            max_batch=args.batch,
            max_wait_ms=50,
            metrics_port=0,
            log_format="json",
            session_timeout_ms=6000,
            frames_topic_pattern=frames_topic_pattern(f"{run}-"),
            consumer_group=f"bench-{run}",
        )
        env = {**os.environ, **s.env, **settings_env(worker_settings, WorkerSettings)}
        line, line2 = f"{run}-l1", f"{run}-l2"
        # both lines exist before any worker starts: picking up a new line is tested
        # elsewhere and its rebalance would only blur the figures here
        admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        admin.create_topics([NewTopic(frames_topic(x), 2, 1) for x in (line, line2)])
        admin.close()

        # throughput: a backlog, drained by a real worker process
        producer = KafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", max_request_size=8 << 20
        )
        for product in products:
            stream_folder(
                producer,
                line,
                product.root / "test",
                fps=0,
                count=args.frames // len(products),
                product=product.name,
            )
        producer.close()
        sent = args.frames // len(products) * len(products)
        worker = start_worker(env, out / "worker-throughput.log")
        try:
            verdicts = collect(s.kafka_bootstrap, verdict_topic(line), sent, 900)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        # frames decided after the first decision, over the time since it: the first
        # batch's frames were decided at t0 and would inflate the rate
        times = sorted(v.decision_time.timestamp() for v in verdicts)
        rate = sum(t > times[0] for t in times) / (times[-1] - times[0])
        ng = sum(v.result == "ng" for v in verdicts)
        print(
            f"pipeline: {len(verdicts)}/{sent} verdicts ({ng} NG with heatmap), "
            f"{rate:.1f} frames/s = {rate / bare:.2f}x the bare model",
            flush=True,
        )

        # latency: a steady camera below capacity
        fps = args.latency_fps or round(0.6 * rate, 1)
        port = free_port()
        worker = start_worker(
            {
                **env,
                **settings_env(
                    dict(
                        consumer_group=f"bench-{run}-lat",
                        metrics_port=port,
                        frames_topic_pattern=frames_topic_pattern(line2, exact=True),
                    ),
                    WorkerSettings,
                ),
            },
            out / "worker-latency.log",
        )
        try:
            wait_until_ready(port, worker)  # model load and group join are not measured
            producer = KafkaProducer(
                bootstrap_servers=s.kafka_bootstrap, acks="all", max_request_size=8 << 20
            )
            per_product = args.latency_frames // len(products)
            for product in products:  # interleaving is not needed for a latency figure
                stream_folder(
                    producer,
                    line2,
                    product.root / "test",
                    fps=fps,
                    count=per_product,
                    product=product.name,
                )
            producer.close()
            lat = collect(s.kafka_bootstrap, verdict_topic(line2), per_product * len(products), 300)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        ms = np.array([v.latency_ms for v in lat])
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        print(
            f"latency at {fps} frames/s: {len(lat)} verdicts, frame->verdict ms "
            f"p50 {p50:.0f}, p90 {p90:.0f}, p99 {p99:.0f}, max {ms.max():.0f}"
        )
        print("| bare model frames/s | pipeline frames/s | ratio | latency fps | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|")
        print(f"| {bare:.1f} | {rate:.1f} | {rate / bare:.2f} | {fps} | {p50:.0f} | {p99:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
