"""What the trainer service tells Prometheus and the orchestrator: its queue, its runs, its health.

Served like the worker's, by `planes.http_endpoints`, on `KENPIN_TRAINER_METRICS_PORT`:
`/metrics`, and two JSON probes:

- `/livez`: the service loop turned within `trainer_livez_stall_s`, or a run is
  in progress (a run holds the loop for minutes to hours; a trainer that dies
  mid-run is noticed by its expired lock, see `operations.retrain_queue`);
- `/readyz`: the loop runs and its last round trip to Redis succeeded.

Metric names (all prefixed `kenpin_trainer_`):

- `queue_depth`: retrain requests waiting or in progress (not yet acknowledged)
- `last_outcome{outcome}`: 1 for the outcome of the last finished run (`released`,
  `refused`, `failed`), 0 for the others; all 0 before the first run
- `runs_total{outcome}`: finished runs, by outcome (an alert on `refused` increases)
- `stage_seconds{stage}`: duration of each stage of a run (`snapshot`, `download`,
  `train`, `calibrate`, `evaluate`, `release`; histogram)
- `running`: 1 while a run is in progress
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from planes.http_endpoints import WsgiApp, make_endpoints
from schemas.control import RetrainOutcome

NAMESPACE = "kenpin"
SUBSYSTEM = "trainer"
#: Outcomes of a finished run, one `last_outcome` series each.
OUTCOMES = ("released", "refused", "failed")
#: From a snapshot of a few normals to a night of training.
STAGE_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 57600)


class TrainerMetrics:
    """The trainer's Prometheus metrics, in their own registry so tests can make many."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        common: dict[str, Any] = {
            "namespace": NAMESPACE,
            "subsystem": SUBSYSTEM,
            "registry": self.registry,
        }
        self.queue_depth = Gauge(
            "queue_depth", "Retrain requests waiting or in progress (not acknowledged).", **common
        )
        self.last_outcome = Gauge(
            "last_outcome",
            "1 for the outcome of the last finished run, 0 for the others.",
            ["outcome"],
            **common,
        )
        self.runs = Counter("runs", "Finished runs, by outcome.", ["outcome"], **common)
        self.stage_seconds = Histogram(
            "stage_seconds",
            "Duration of each stage of a retrain run.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            **common,
        )
        self.running = Gauge("running", "1 while a run is in progress.", **common)
        for outcome in OUTCOMES:  # every series exists from the start: alerts see a 0
            self.last_outcome.labels(outcome=outcome).set(0)
            self.runs.labels(outcome=outcome)

    def run_finished(self, outcome: RetrainOutcome) -> None:
        """Record a finished run: its outcome, and the duration of each stage it went through."""
        for known in OUTCOMES:
            self.last_outcome.labels(outcome=known).set(1 if known == outcome.status else 0)
        if outcome.status in OUTCOMES:
            self.runs.labels(outcome=outcome.status).inc()

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)


@dataclass
class TrainerHealth:
    """What /livez and /readyz report; the service loop updates it, the HTTP thread reads it."""

    livez_stall_s: float = 60.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    started_at: float = field(init=False, repr=False)
    last_turn: float | None = field(default=None, init=False)
    run_since: float | None = field(default=None, init=False)
    redis_ok: bool = field(default=False, init=False)
    stopping: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock()

    def loop_turned(self, redis_ok: bool) -> None:
        """Once per turn of the service loop, with whether its Redis round trip succeeded."""
        with self._lock:
            self.last_turn, self.redis_ok = self.clock(), redis_ok

    def run_started(self) -> None:
        with self._lock:
            self.run_since = self.clock()

    def run_ended(self) -> None:
        with self._lock:
            self.run_since = None
            self.last_turn = self.clock()

    def stop(self) -> None:
        with self._lock:
            self.stopping = True

    def live(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        with self._lock:
            last, run_since = self.last_turn, self.run_since
        since = None if last is None else now - last
        alive = run_since is not None or (
            now - self.started_at <= self.livez_stall_s
            if since is None
            else since <= self.livez_stall_s
        )
        return alive, {
            "live": alive,
            "running_s": None if run_since is None else round(now - run_since, 3),
            "seconds_since_loop_turn": None if since is None else round(since, 3),
            "stall_s": self.livez_stall_s,
            "uptime_s": round(now - self.started_at, 3),
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            ready = self.last_turn is not None and self.redis_ok and not self.stopping
            body = {
                "ready": ready,
                "loop_started": self.last_turn is not None,
                "redis": self.redis_ok,
                "running": self.run_since is not None,
                "stopping": self.stopping,
            }
        return ready, body


def make_trainer_app(metrics: TrainerMetrics, health: TrainerHealth) -> WsgiApp:
    """WSGI app: `/livez`, `/readyz` -> JSON, 200 or 503; anything else -> metrics."""
    return make_endpoints(metrics.registry, {"/livez": health.live, "/readyz": health.ready})
