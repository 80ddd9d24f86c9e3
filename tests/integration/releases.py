"""Helpers for the hot-swap and retrain tests: tiny models, workers with a hot swap, a camera."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kafka import KafkaProducer

from model.loading import load_model
from planes.control import ControlPlane
from planes.storage import ObjectStore
from schemas.common import utc_now
from tests.integration.frames import frame_id_of, headers_for
from worker.hot_swap import HotSwap
from worker.live_scores import LiveScores
from worker.metrics import WorkerMetrics
from worker.service import Worker
from worker.settings import WorkerSettings


@dataclass
class RunningWorker:
    worker: Worker
    hot_swap: HotSwap
    metrics: WorkerMetrics
    thread: threading.Thread

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)


def start_worker(
    settings: WorkerSettings, artifact: Path, live_scores: bool = False
) -> RunningWorker:
    """A Worker with its HotSwap thread (and, asked for, its score counts), running in a
    thread of this process."""
    model = load_model(artifact, device="cpu")
    model.warm_up(settings.max_batch)
    metrics = WorkerMetrics()
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    hot_swap = HotSwap(settings, control, store, model.version, metrics=metrics)
    hot_swap.start()
    counts = None
    if live_scores:
        counts = LiveScores(
            control, flush_s=settings.live_scores_flush_s, ttl_s=settings.evidence_ttl_s
        ).start()
    worker = Worker(
        settings, model, metrics=metrics, store=store, hot_swap=hot_swap, live_scores=counts
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return RunningWorker(worker, hot_swap, metrics, thread)


@dataclass
class Camera:
    """Streams frames at a steady rate, round robin over partitions (one camera each)."""

    bootstrap: str
    topic: str
    line: str
    images: list[tuple[Path, str]]
    fps: float
    partitions: int = 1
    sent: dict[str, int] = field(default_factory=dict)  # frame id -> partition
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        period, k = 1.0 / self.fps, 0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                path, product = self.images[k % len(self.images)]
                partition = k % self.partitions
                headers = headers_for(self.line, product, camera=f"cam-{partition}")
                producer.send(
                    self.topic, value=path.read_bytes(), headers=headers, partition=partition
                )
                self.sent[frame_id_of(headers)] = partition
                k += 1
                next_at += period
                self._stop.wait(max(0.0, next_at - time.monotonic()))
            producer.flush(timeout=30)
        finally:
            producer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def run_id(letter: str) -> str:
    return f"{letter}{uuid.uuid4().hex[:8]}"


def now() -> datetime:
    return utc_now()
