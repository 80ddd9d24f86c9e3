"""The normal store: OK frames sampled from the line, the material the trainer retrains on.

Lines change (lighting, suppliers, new products), so the model must learn from
what the line looks like now. A worker keeps a small random sample of the
frames it judged OK, as the camera's original bytes, under
`normals/<product>/<YYYY-MM-DD>/<frame id>.<ext>` (dated by capture, UTC).

Only confident OK frames are kept: a frame scoring within `margin` of its
product's threshold may be an unnoticed defect, and teaching the model that it
is normal would blind it. A per-product daily cap keeps a fast line from
filling the store with one day's look. Uploads run in their own thread, off the
hot path, with a bounded backlog: when S3 is slow, samples are dropped (and
counted), never the line slowed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

from planes.logs import get_logger
from planes.storage import ObjectStore
from schemas.frames import FrameHeaders
from schemas.object_layout import normal_key
from worker.metrics import WorkerMetrics

log = get_logger(__name__)

_MAX_BACKLOG = 32


class NormalSampler:
    """Decides which OK frames become normal samples, and stores them in the background."""

    def __init__(
        self,
        store: ObjectStore,
        rate: float,
        *,
        rates: Mapping[str, float] | None = None,
        daily_cap: int = 500,
        margin: float = 0.2,
        metrics: WorkerMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.rate = rate
        self.rates = dict(rates or {})
        self.daily_cap = daily_cap
        self.margin = margin
        self.metrics = metrics or WorkerMetrics()
        self.rng = rng or random.Random()
        self._counts: dict[tuple[str, str], int] = {}
        self._backlog = 0
        self._lock = threading.Lock()
        self._uploads = ThreadPoolExecutor(1, "normals")

    def offer(self, headers: FrameHeaders, raw: bytes, score: float, threshold: float) -> bool:
        """Maybe keep this OK frame; returns whether an upload was queued. Never blocks."""
        product = headers.product
        outcome = self._decide(headers, score, threshold)
        if outcome is not None:
            self.metrics.normals.labels(product=product, outcome=outcome).inc()
            return False
        key = normal_key(product, headers.capture_time, headers.frame_id, headers.content_type)
        self._uploads.submit(self._store, product, key, raw, headers.content_type)
        return True

    def _decide(self, headers: FrameHeaders, score: float, threshold: float) -> str | None:
        """None to keep the frame, else the reason it is not kept (a metric label)."""
        if score > threshold - self.margin * abs(threshold):
            return "near_threshold"
        if self.rng.random() >= self.rates.get(headers.product, self.rate):
            return "not_drawn"
        day = headers.capture_time.astimezone(UTC).date().isoformat()
        with self._lock:
            if self._counts.get((headers.product, day), 0) >= self.daily_cap:
                return "daily_cap"
            if self._backlog >= _MAX_BACKLOG:
                return "backlog"
            # forget earlier days: the counts of one day are all that is needed
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= day}
            self._counts[(headers.product, day)] = self._counts.get((headers.product, day), 0) + 1
            self._backlog += 1
        return None

    def _store(self, product: str, key: str, raw: bytes, content_type: str) -> None:
        try:
            self.store.put(key, raw, content_type)
            self.metrics.normals.labels(product=product, outcome="stored").inc()
        except Exception as exc:  # a lost sample is harmless; a crashed upload thread is not
            self.metrics.normals.labels(product=product, outcome="failed").inc()
            log.warning("normal sample not stored", key=key, error=repr(exc))
        finally:
            with self._lock:
                self._backlog -= 1

    def close(self) -> None:
        """Finish queued uploads (called when the worker stops)."""
        self._uploads.shutdown(wait=True)
