"""Whole-path throughput and latency next to the bare model, in one run, per runtime.

    python -m deploy.benchmarks.pipeline --model ARTIFACT --source DIR [--batch 16]
        [--runtime torch:bf16 --runtime openvino:fp32 ...] [--broker-storage s3|memory]

1. Bare model: `InspectionModel.judge` on prepared frames at the batch size:
   the ceiling the pipeline is measured against.
2. Throughput: a backlog of frames is produced first, then a worker process
   (`kenpin-worker run`, the real thing) drains it through the local stack:
   Kafka in, decode, batch, model, verdicts out (acks=all), NG heatmaps and
   originals to S3, offsets committed. Frames/s = verdicts / (last decision -
   first decision), so start-up and group join are not counted.
3. Latency: at the nominal load (default 2 lines x 20 frames/s, each line its
   own camera streaming at a steady rate), capture->verdict p50/p99 from the
   verdicts' own capture and decision times.
4. Worker resident memory (RSS, the worker process and its children), sampled
   through both runs; and, per NG frame, the time the worker spends off the hot
   path rendering the heatmap overlay and uploading it and the original to S3
   (the same calls, timed here on the run's NG frames against the same S3).
Steps 1-3 are repeated for every `--runtime` (runtime:precision; a compiled
runtime runs the artifact's ONNX export, made into the output folder when the
artifact has none). The frames are the real images of --source (an
MVTec-layout folder), so the NG share, and with it the heatmap work, is what
that data gives: every test image by default (mostly defects, a worst case for
the heatmap work), or only the normal test parts with `--frames-from test/good`
(what a line mostly sees). Step 2 also prints how many cores each process kept
busy while the worker drained the backlog (worker, broker, S3 server, Redis,
this benchmark's verdict reader): on one machine they share the same cores.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from deploy.demo import wait_until_ready
from deploy.local.processes import free_port
from deploy.local.stack import LocalStack
from model.loading import load_model, load_network
from model.release import read_manifest
from model.runtime import InspectionModel
from model.runtimes import ONNX_FILE, RUNTIMES, check_choice
from planes.settings import settings_env
from planes.storage import ObjectStore
from schemas.topics import frames_topic, frames_topic_pattern, verdict_topic
from trainer.learning.data import discover, read_rgb
from trainer.learning.export import add_onnx_export
from worker.camera import stream_folder
from worker.heatmaps import render_overlay
from worker.settings import WorkerSettings


def with_export(model_path: Path, out: Path) -> Path:
    """`model_path` if its release lists an ONNX export, else a copy of it with one."""
    if ONNX_FILE in {f.name for f in read_manifest(model_path).files}:
        return model_path
    copy = out / "model-with-export"
    if not copy.is_dir() or ONNX_FILE not in {f.name for f in read_manifest(copy).files}:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(model_path, copy)
        network, manifest = load_network(copy)
        add_onnx_export(network, manifest, copy)
    return copy


def bare_model(model: InspectionModel, images: list[Path], batch: int, seconds: float) -> float:
    frames = [read_rgb(p, model.image_size) for p in images[:batch]]
    model.judge(frames)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.judge(frames)
        done += len(frames)
    return done / (time.perf_counter() - started)


def heatmap_cost(
    model: InspectionModel,
    images: list[tuple[Path, str]],
    store: ObjectStore,
    prefix: str,
    most: int = 32,
) -> tuple[int, float, float]:
    """(NG frames timed, ms rendering, ms uploading) per NG frame, as the worker does both."""
    render_s = upload_s = 0.0
    timed = 0
    for path, product in images:
        if timed >= most:
            break
        threshold = model.threshold(product)
        frame = read_rgb(path, model.image_size)
        judged = model.judge([frame])
        if threshold is None or judged.scores[0] <= threshold:
            continue
        amap = judged.maps[0]
        started = time.perf_counter()
        png = render_overlay(
            frame, amap, vmin=float(np.median(amap)), vmax=max(threshold, float(amap.max()))
        )
        render_s += time.perf_counter() - started
        started = time.perf_counter()
        store.put(f"{prefix}/{timed}.png", png, "image/png")
        store.put(f"{prefix}/{timed}{path.suffix}", path.read_bytes(), _content_type(path))
        upload_s += time.perf_counter() - started
        timed += 1
    return timed, 1000 * render_s / max(1, timed), 1000 * upload_s / max(1, timed)


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class ProcessSampler:
    """Peak resident memory of the worker (and its children), and CPU time of every process
    on the path, sampled in a thread: where the cores went while the worker drained."""

    def __init__(self, worker_pid: int, others: dict[str, int], every_s: float = 0.25) -> None:
        self.peak = 0
        self.samples: list[tuple[float, dict[str, float]]] = []  # (wall time, CPU s by name)
        self._worker = psutil.Process(worker_pid)
        self._others = {name: psutil.Process(pid) for name, pid in others.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    @staticmethod
    def _cpu(processes: list[psutil.Process]) -> float:
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                tree = [self._worker, *self._worker.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                return
            cpu = {"worker": self._cpu(tree)}
            cpu.update({name: self._cpu([p]) for name, p in self._others.items()})
            self.samples.append((time.time(), cpu))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak

    def cores(self, start: float, end: float) -> dict[str, float]:
        """Cores each process kept busy between wall times `start` and `end` (mean)."""
        inside = [(t, cpu) for t, cpu in self.samples if start <= t <= end]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        return {name: (last[name] - first[name]) / (t1 - t0) for name in first}


def collect(bootstrap: str, topics: list[str], expected: int, timeout_s: float) -> list:
    from schemas.verdicts import Verdict

    consumer = KafkaConsumer(
        *topics,
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


def stop_worker(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", type=Path, required=True, help="MVTec-layout dataset root")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--runtime",
        action="append",
        help="runtime:precision, repeatable ("
        + ", ".join(f"{n}:{p}" for n, s in RUNTIMES.items() for p in s.precisions)
        + "); default torch:<--precision>",
    )
    parser.add_argument("--precision", default="bf16", choices=RUNTIMES["torch"].precisions)
    parser.add_argument("--frames", type=int, default=480, help="backlog size")
    parser.add_argument(
        "--frames-from",
        default="test",
        choices=["test", "test/good"],
        help="each product's folder the cameras stream: test (every test image, mostly "
        "defects: an NG-heavy worst case) or test/good (normal parts, as a line mostly "
        "sees: NG only where the model raises a false alarm)",
    )
    parser.add_argument("--lines", type=int, default=2, help="lines streaming in the latency run")
    parser.add_argument(
        "--latency-fps", type=float, default=20.0, help="frames/s of each line's camera"
    )
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pipeline"))
    parser.add_argument("--device", default="cpu", help="the worker's device: cpu or cuda")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    parser.add_argument(
        "--broker-storage",
        default="s3",
        choices=["s3", "memory"],
        help="Tansu's storage: s3 (durable, on the local SeaweedFS, which then "
        "shares these cores) or memory",
    )
    args = parser.parse_args(argv)
    runtimes = [r.partition(":") for r in args.runtime or [f"torch:{args.precision}"]]
    for runtime, _, precision in runtimes:
        try:
            check_choice(runtime, precision or "fp32")
        except ValueError as exc:
            parser.error(str(exc))

    products = [p for p in discover(args.source) if p.test]
    images = [item.path for p in products for item in p.test]
    labelled = [(item.path, p.name) for p in products for item in p.test]
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"frames: {len(images)} test images of {', '.join(p.name for p in products)}; "
        f"batch {args.batch}, {os.cpu_count()} CPUs, broker storage {args.broker_storage}",
        flush=True,
    )
    rows = []
    stack_dir = out / f"stack-{uuid.uuid4().hex[:6]}"
    with LocalStack(stack_dir, broker_storage=args.broker_storage) as stack:
        os.environ.update(stack.settings.env)
        store = ObjectStore.from_settings(WorkerSettings())
        for runtime, _, precision in runtimes:
            precision = precision or "fp32"
            model_path = args.model if runtime == "torch" else with_export(args.model, out)
            model = load_model(model_path, device=args.device, precision=precision, runtime=runtime)
            row = {"runtime": f"{runtime}:{precision}"}
            row["bare"] = bare_model(model, images, args.batch, seconds=20)
            print(f"{row['runtime']}: bare model {row['bare']:.1f} frames/s", flush=True)
            ng, render_ms, upload_ms = heatmap_cost(model, labelled, store, f"bench/{uuid.uuid4()}")
            row.update(ng_timed=ng, render_ms=render_ms, upload_ms=upload_ms)
            del model
            row.update(
                run_stack(args, stack, products, model_path.absolute(), runtime, precision, out)
            )
            rows.append(row)
            print(row, flush=True)
    print(
        "\n| runtime | bare frames/s | pipeline frames/s | ratio | NG share | "
        "latency load | p50 ms | p99 ms | worker RSS MiB | NG render ms | NG upload ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['bare']:.1f} | {r['rate']:.1f} | {r['rate'] / r['bare']:.2f} "
            f"| {r['ng_share']:.0%} | {r['load']} | {r['p50']:.0f} | {r['p99']:.0f} "
            f"| {r['rss'] / 2**20:.0f} | {r['render_ms']:.1f} | {r['upload_ms']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def run_stack(
    args: argparse.Namespace,
    stack: LocalStack,
    products: list,
    model_path: Path,
    runtime: str,
    precision: str,
    out: Path,
) -> dict:
    """Throughput on a backlog, then latency at the nominal load, with real worker processes."""
    s = stack.settings
    run = uuid.uuid4().hex[:6]
    worker_settings = dict(
        model_path=model_path,
        device=args.device,
        precision=precision,
        runtime=runtime,
        max_batch=args.batch,
        max_wait_ms=50,
        metrics_port=0,
        log_format="json",
        session_timeout_ms=6000,
        frames_topic_pattern=frames_topic_pattern(f"{run}-"),
        consumer_group=f"bench-{run}",
    )
    env = {**os.environ, **s.env, **settings_env(worker_settings, WorkerSettings)}
    line = f"{run}-l1"
    busy = [f"{run}x-l{i + 1}" for i in range(args.lines)]
    # every line exists before any worker starts: picking up a new line is tested
    # elsewhere and its rebalance would only blur the figures here
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    admin.create_topics([NewTopic(frames_topic(x), 2, 1) for x in (line, *busy)])
    admin.close()

    # throughput: a backlog, drained by a real worker process
    producer = KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap, acks="all", max_request_size=8 << 20
    )
    for product in products:
        stream_folder(
            producer,
            line,
            product.root / args.frames_from,
            fps=0,
            count=args.frames // len(products),
            product=product.name,
        )
    producer.close()
    sent = args.frames // len(products) * len(products)
    worker = start_worker(env, out / f"worker-throughput-{runtime}-{precision}.log")
    servers = {server.name: server.pid for server in stack.servers()}
    rss = ProcessSampler(worker.pid, {**servers, "benchmark (collector)": os.getpid()})
    try:
        verdicts = collect(s.kafka_bootstrap, [verdict_topic(line)], sent, 900)
    finally:
        stop_worker(worker)
        peak = rss.stop()
    # frames decided after the first decision, over the time since it: the first
    # batch's frames were decided at t0 and would inflate the rate
    times = sorted(v.decision_time.timestamp() for v in verdicts)
    rate = sum(t > times[0] for t in times) / (times[-1] - times[0])
    ng = sum(v.result == "ng" for v in verdicts)
    print(f"pipeline: {len(verdicts)}/{sent} verdicts ({ng} NG with heatmap), {rate:.1f} frames/s")
    cores = rss.cores(times[0], times[-1])
    print(
        f"cores busy while draining ({os.cpu_count()} in all): "
        + ", ".join(f"{name} {used:.2f}" for name, used in cores.items()),
        flush=True,
    )

    # latency: every line's camera at the nominal rate, all at once
    port = free_port()
    worker = start_worker(
        {
            **env,
            **settings_env(
                dict(
                    consumer_group=f"bench-{run}-lat",
                    metrics_port=port,
                    frames_topic_pattern=frames_topic_pattern(f"{run}x-"),
                ),
                WorkerSettings,
            ),
        },
        out / f"worker-latency-{runtime}-{precision}.log",
    )
    rss = ProcessSampler(worker.pid, {})
    # each camera sends the same number of frames of every product
    per_line = max(1, int(args.latency_fps * args.latency_seconds) // len(products)) * len(products)
    try:
        wait_until_ready(port, worker)  # model load and group join are not measured
        cameras = [
            threading.Thread(target=_camera, args=(s.kafka_bootstrap, x, products, args, per_line))
            for x in busy
        ]
        for camera in cameras:
            camera.start()
        for camera in cameras:
            camera.join()
        lat = collect(
            s.kafka_bootstrap, [verdict_topic(x) for x in busy], per_line * len(busy), 300
        )
    finally:
        stop_worker(worker)
        peak = max(peak, rss.stop())
    ms = np.array([v.latency_ms for v in lat])
    p50, p99 = np.percentile(ms, [50, 99])
    load = f"{args.lines} x {args.latency_fps:g}/s"
    print(
        f"latency at {load}: {len(lat)} verdicts, capture->verdict p50 {p50:.0f} ms, p99 {p99:.0f}"
    )
    return {
        "rate": rate,
        "ng_share": ng / max(1, len(verdicts)),
        "load": load,
        "p50": float(p50),
        "p99": float(p99),
        "rss": peak,
        "cores": cores,
    }


def _camera(
    bootstrap: str, line: str, products: list, args: argparse.Namespace, count: int
) -> None:
    """One line's camera: its products' test images in turn, at the nominal rate."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8 << 20)
    try:
        per_product = count // len(products)
        for product in products:
            stream_folder(
                producer,
                line,
                product.root / args.frames_from,
                fps=args.latency_fps,
                count=per_product,
                product=product.name,
            )
    finally:
        producer.close()


if __name__ == "__main__":
    sys.exit(main())
