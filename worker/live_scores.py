"""Counting every judged score for the line's own threshold proposal, off the hot path.

The loop adds a frame's score bin to an in-memory count (a dict increment under
a lock); a background thread adds the counts to Redis every `flush_s`
(`planes.control.ControlPlane.add_scores`, `schemas.live_scores` for the bins).
Redis being away costs nothing but delay: counts not yet added stay in memory
and go with the next flush, so an outage loses no count, and a worker that is
killed loses at most one interval's worth. A frame judged twice (a replay after
a crash) is counted twice: a bias of a few frames against thousands.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from planes.control import ControlPlane, ScoreCounts
from planes.logs import get_logger
from schemas.live_scores import bin_field, score_bin
from worker.metrics import WorkerMetrics

log = get_logger(__name__)


class LiveScores:
    """Score counts per (release, line, product), added to Redis in the background."""

    def __init__(
        self,
        control: ControlPlane,
        *,
        flush_s: float = 5.0,
        ttl_s: float = 30 * 86400,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.control = control
        self.flush_s = flush_s
        self.ttl_s = ttl_s
        self.metrics = metrics or WorkerMetrics()
        self._counts: ScoreCounts = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-scores", daemon=True)

    def count(
        self, version: str, line: str, product: str, score: float, threshold: float, ng: bool
    ) -> None:
        """Count one judged frame; never blocks on Redis."""
        if not threshold > 0:
            return  # a threshold of 0 or less has no bins; such a release is not proposed for
        name = bin_field("ng" if ng else "ok", score_bin(score, threshold))
        with self._lock:
            fields = self._counts.setdefault((version, line, product), defaultdict(int))
            fields[name] += 1

    def flush(self) -> bool:
        """Add what was counted to Redis; on failure keep it for the next flush."""
        with self._lock:
            taken, self._counts = self._counts, {}
        if not taken:
            return True
        try:
            self.control.add_scores(taken, self.ttl_s)
        except Exception as exc:  # Redis away: keep the counts, judging goes on
            with self._lock:
                for key, fields in taken.items():
                    mine = self._counts.setdefault(key, defaultdict(int))
                    for name, count in fields.items():
                        mine[name] += count
            self.metrics.live_scores_pending.set(self.pending())
            log.warning("live scores not added yet", error=repr(exc))
            return False
        self.metrics.live_scores_pending.set(self.pending())
        return True

    def pending(self) -> int:
        """Frames counted and not yet in Redis."""
        with self._lock:
            return sum(sum(fields.values()) for fields in self._counts.values())

    def start(self) -> LiveScores:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and add what is left (called when the worker stops)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.flush_s + 5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
