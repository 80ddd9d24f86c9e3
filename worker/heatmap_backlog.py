"""NG heatmaps stored off the hot path, retried through an S3 outage, within a size limit.

A PLC needs the verdict now; the operator can see the heatmap a minute later.
So a flagged part's heatmap and original frame are rendered and stored by a
small thread pool, and a failed store is retried with exponential backoff until
it succeeds, instead of failing the frame. Meanwhile verdicts keep flowing, and
only the frame's own partition holds back its commit (`worker.offsets`).

The backlog is bounded in items and bytes. When it is full the worker pauses
consumption (`Worker._flow_control`) rather than dropping a heatmap or growing
without limit; it resumes once S3 has taken the backlog. A worker stopped
during an outage abandons what waits: those frames were never committed, so
their next owner judges and stores them again (keys are per frame: no
duplicates).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from planes.logs import get_logger
from planes.storage import ObjectStore
from schemas.frames import FrameHeaders
from schemas.object_layout import frame_key, heatmap_key
from worker.heatmaps import render_overlay
from worker.metrics import WorkerMetrics

log = get_logger(__name__)

FIRST_RETRY_S = 0.5


class BacklogClosed(RuntimeError):
    """The worker is stopping: the heatmap was not stored, its frame is not committed."""


@dataclass
class HeatmapJob:
    """What one NG frame leaves for the operator: its heatmap and its original bytes."""

    headers: FrameHeaders
    raw: bytes
    original: np.ndarray
    anomaly_map: np.ndarray
    threshold: float

    @property
    def nbytes(self) -> int:
        """Memory held while the job waits (the rendered PNG is smaller than the frame)."""
        return len(self.raw) + self.original.nbytes + self.anomaly_map.nbytes

    def objects(self) -> list[tuple[str, bytes, str, dict[str, str] | None]]:
        """(key, bytes, content type, metadata) of the heatmap overlay and the original frame."""
        h = self.headers
        amap = self.anomaly_map
        png = render_overlay(
            self.original,
            amap,
            vmin=float(np.median(amap)),
            vmax=max(self.threshold, float(amap.max())),
        )
        return [
            (heatmap_key(h.line, h.capture_time, h.frame_id), png, "image/png", None),
            (
                frame_key(h.line, h.capture_time, h.frame_id, h.content_type),
                self.raw,
                h.content_type,
                # lets an operator file the frame as a normal of its product (mark-good)
                {"product": h.product, "frame-id": h.frame_id},
            ),
        ]


class HeatmapBacklog:
    """Stores heatmap jobs in the background; `full()` tells the loop to pause consumption."""

    def __init__(
        self,
        store: ObjectStore,
        metrics: WorkerMetrics,
        *,
        max_items: int,
        max_bytes: int,
        retry_max_s: float = 10.0,
        threads: int = 2,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_items, self.max_bytes = max_items, max_bytes
        self.retry_max_s = retry_max_s
        self._pool = ThreadPoolExecutor(threads, "heatmap")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._items = 0
        self._bytes = 0
        self._failing_since: float | None = None

    def submit(self, job: HeatmapJob) -> Future:
        """Queue `job`; the future completes once both objects are stored."""
        size = job.nbytes
        self._account(1, size)
        future = self._pool.submit(self._store, job)
        future.add_done_callback(lambda _: self._account(-1, -size))
        return future

    def full(self) -> bool:
        """True when no more heatmaps should be taken on (pause consumption)."""
        with self._lock:
            return self._items >= self.max_items or self._bytes >= self.max_bytes

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._items

    def close(self) -> None:
        """Stop retrying, abandon what waits (its frames are not committed), join the threads."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- the pool's side ---------------------------------------------------------------

    def _account(self, items: int, size: int) -> None:
        with self._lock:
            self._items += items
            self._bytes += size
            self.metrics.heatmap_backlog.set(self._items)
            self.metrics.heatmap_backlog_bytes.set(self._bytes)

    def _store(self, job: HeatmapJob) -> None:
        try:
            objects = job.objects()
        except Exception:  # a bug, not an outage: retrying cannot help, the verdict stands
            log.exception("heatmap could not be rendered", frame_id=job.headers.frame_id)
            self.metrics.heatmaps.labels(outcome="render_failed").inc()
            return
        delay = FIRST_RETRY_S
        while objects:
            key, data, content_type, metadata = objects[0]
            try:
                self.store.put(key, data, content_type, metadata=metadata)
            except Exception as exc:
                self._failed(exc)
                if self._stop.wait(delay):
                    raise BacklogClosed(f"stopping before {key} was stored") from exc
                delay = min(delay * 2, self.retry_max_s)
                continue
            objects.pop(0)
        self._stored()

    def _failed(self, exc: Exception) -> None:
        self.metrics.heatmaps.labels(outcome="store_failed").inc()
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
        if first:
            log.warning(
                "heatmap storage failing, retrying with backoff; verdicts keep flowing",
                error=repr(exc),
                waiting=self.waiting,
            )

    def _stored(self) -> None:
        self.metrics.heatmaps.labels(outcome="stored").inc()
        with self._lock:
            since, self._failing_since = self._failing_since, None
        if since is not None:
            log.info(
                "heatmap storage recovered",
                outage_s=round(time.monotonic() - since, 1),
                waiting=self.waiting,
            )
