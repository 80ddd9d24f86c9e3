"""`./deploy/demo`: a whole inspection line on one machine, start to finish.

Local stack up -> a small model trained on a procedural factory line (or on
--data DIR) -> a worker process -> two camera processes streaming two lines ->
verdicts shown live -> a summary -> everything stopped again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from deploy.local.processes import free_port
from deploy.local.stack import LocalStack
from model.runtime import fastest_precision, resolve_device
from planes.settings import settings_env
from schemas.object_layout import HEATMAP_PREFIX
from schemas.topics import DEADLETTER_TOPIC, frames_topic, verdict_topic
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(f"\033[1m== {message}\033[0m" if sys.stdout.isatty() else f"== {message}", flush=True)


def train_model(data: Path, out: Path, image_size: int, epochs: int) -> Path:
    from trainer.learning.config import TrainConfig
    from trainer.learning.export import export
    from trainer.learning.train import train

    # bf16 only where the CPU computes it natively: emulated, it is ten times slower
    bf16 = fastest_precision(resolve_device("cpu")) == "bf16"
    config = TrainConfig(image_size=image_size, epochs=epochs, batch_size=16, bf16=bf16)
    started = time.perf_counter()
    result = train(data, config)
    manifest = export(result, out)
    say(
        f"trained {manifest.version} in {time.perf_counter() - started:.0f}s: "
        + ", ".join(f"{p} threshold {t.threshold:.3f}" for p, t in manifest.products.items())
    )
    return out


def create_topics(bootstrap: str, topics: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics])
    finally:
        admin.close()


def show_verdicts(bootstrap: str, lines: list[str], expected: int, timeout_s: float) -> tuple:
    """Print each verdict and dead letter as it arrives; stop at `expected` outcomes."""
    from schemas.deadletters import DeadLetter
    from schemas.verdicts import Verdict

    topics = [verdict_topic(line) for line in lines] + [DEADLETTER_TOPIC]
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    verdicts, letters = [], []
    deadline = time.monotonic() + timeout_s
    try:
        while len(verdicts) + len(letters) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.topic == DEADLETTER_TOPIC:
                        d = DeadLetter.from_json(record.value)
                        letters.append(d)
                        print(f"  DEAD {d.source_topic} offset {d.source_offset}: {d.reason}")
                        continue
                    v = Verdict.from_json(record.value)
                    verdicts.append(v)
                    mark = "NG" if v.result == "ng" else "ok"
                    print(
                        f"  {v.decision_time:%H:%M:%S} {v.line:<7} {v.camera} {v.product:<18}"
                        f" {mark}  score {v.score:6.3f} / {v.threshold:6.3f}"
                        f"  {v.latency_ms:6.0f} ms"
                        + (f"  {v.heatmap_key}" if v.heatmap_key else ""),
                        flush=True,
                    )
    finally:
        consumer.close()
    return verdicts, letters


def wait_until_ready(port: int, worker: subprocess.Popen, timeout_s: float = 180) -> None:
    """/healthz answers 200 once the model is loaded and the worker has its partitions."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}; see worker.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the worker did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./deploy/demo", description=__doc__)
    parser.add_argument("--data", type=Path, help="dataset in MVTec layout (default: procedural)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--frames", type=int, default=40, help="frames per line")
    parser.add_argument("--fps", type=float, default=4.0, help="frames per second per line")
    args = parser.parse_args(argv)

    from planes.logs import configure_logging
    from trainer.learning.data import discover
    from trainer.learning.synthetic_dataset import generate

    configure_logging("console", "WARNING")
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    say("starting the local stack (Kafka-API broker, S3, Redis)")
    # a fresh stack every run: the broker keeps its topics and records in the stack's
    # S3 data, so a second demo would find the last one's topics and verdicts
    LocalStack(out / "stack").down(purge=True)
    with LocalStack(out / "stack") as stack:
        settings = stack.settings
        data = args.data
        if data is None:
            data = out / "factory-line"
            if not data.exists():
                say("generating a procedural factory line: washers, tiles, labels")
                generate(data, size=args.image_size, train=60, test_good=12, test_per_defect=6)
        products = [p.name for p in discover(data)]
        say(f"training one model on {len(products)} products: {', '.join(products)}")
        model = train_model(data, out / "model", args.image_size, args.epochs)

        lines = ["line-1", "line-2"]
        sources = {
            line: data / products[i % len(products)] / "test" for i, line in enumerate(lines)
        }
        create_topics(settings.kafka_bootstrap, [frames_topic(line) for line in lines])
        metrics_port = free_port()
        worker_settings = dict(
            model_path=model,
            device="cpu",
            precision=fastest_precision(resolve_device("cpu")),
            log_format="json",
            metrics_port=metrics_port,
            session_timeout_ms=6000,
        )
        env = {**os.environ, **settings.env, **settings_env(worker_settings, WorkerSettings)}
        say(f"starting a worker (metrics and health on 127.0.0.1:{metrics_port})")
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            env=env,
            stdout=(out / "worker.log").open("wb"),  # noqa: SIM115 (lives as long as the worker)
            stderr=subprocess.STDOUT,
        )
        cameras = []
        try:
            wait_until_ready(metrics_port, worker)
            for i, line in enumerate(lines):
                say(f"camera cam-{i + 1} streams {sources[line]} to {line} at {args.fps} fps")
                cameras.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "worker.cli",
                            "camera",
                            "--line",
                            line,
                            "--source",
                            str(sources[line]),
                            "--fps",
                            str(args.fps),
                            "--count",
                            str(args.frames),
                            "--camera",
                            f"cam-{i + 1}",
                        ],
                        env=env,
                        stdout=subprocess.DEVNULL,
                    )
                )
            say("verdicts, live (score / threshold, capture -> verdict latency)")
            verdicts, letters = show_verdicts(
                settings.kafka_bootstrap, lines, expected=args.frames * len(lines), timeout_s=600
            )
            for camera in cameras:
                camera.wait(timeout=60)
            health = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5).read()
            )
        finally:
            for camera in cameras:
                if camera.poll() is None:
                    camera.kill()
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        summarise(verdicts, letters, args.frames * len(lines), health, settings, out)
    say("stack stopped")
    return 0


def summarise(verdicts, letters, sent: int, health: dict, settings, out: Path) -> None:
    from minio import Minio

    ng = [v for v in verdicts if v.result == "ng"]
    latency = np.array([v.latency_ms for v in verdicts]) if verdicts else np.zeros(1)
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    say("summary")
    print(
        f"  frames sent {sent}, verdicts {len(verdicts)} (ok {len(verdicts) - len(ng)}, "
        f"ng {len(ng)}), dead letters {len(letters)}"
    )
    print(f"  capture -> verdict latency ms: p50 {p50:.0f}, p95 {p95:.0f}, p99 {p99:.0f}")
    print(f"  worker health: {health}")
    print(
        f"  heatmaps: s3://{settings.s3_bucket}/{HEATMAP_PREFIX}/<line>/<date>/<frame id>.png "
        f"on {settings.s3_endpoint} (originals beside them, .original.<ext>)"
    )
    if ng:
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=False,
        )
        worst = max(ng, key=lambda v: v.score / v.threshold)
        picture = out / "heatmap-example.png"
        client.fget_object(settings.s3_bucket, worst.heatmap_key, str(picture))
        print(f"  the most anomalous part ({worst.product}, score {worst.score:.3f}): {picture}")


if __name__ == "__main__":
    sys.exit(main())
