"""What a worker tells Prometheus and the orchestrator: throughput, outcomes, latency, health.

One HTTP port serves `/metrics` (Prometheus text format) and two probes, both JSON:

- `/livez`: the worker loop has turned within `livez_stall_s` (or the process is
  still inside its start-up grace): a loop stuck in a call shows here, and the
  orchestrator restarts the process;
- `/readyz`: a model is loaded and partitions are assigned, with the version served
  and why (e.g. the last good release because the current one was refused);
  `/healthz` is an alias kept for probes written before the split.

Liveness and readiness are apart because they call for different actions: a
worker waiting for its partitions (more workers than partitions, a rebalance)
is healthy and must not be killed, but it does not judge frames either.

The server is `planes.http_endpoints` (the trainer serves its own metrics and
probes through it too). It binds loopback unless told otherwise
(`KENPIN_METRICS_HOST`): the endpoints are unauthenticated.

Metric names (all prefixed `kenpin_`):

- `kenpin_frames_total{line}`: frames taken off Kafka
- `kenpin_verdicts_total{line,product,result}`: verdicts published, `ok` / `ng`
- `kenpin_deadletters_total{line,product,reason}`: dead letters published, by reason
  code; `product` is `unknown` when the frame's headers did not say
- `kenpin_batch_size`: frames per forward pass (histogram)
- `kenpin_inference_seconds`: one forward pass of a batch, scores and maps (histogram)
- `kenpin_frame_latency_seconds{line,product}`: capture time to verdict (histogram)
- `kenpin_s3_errors_total{operation}`: S3 requests that failed (`put`, `get`, `stat`,
  `list`, `bucket`, `lifecycle`)
- `kenpin_kafka_errors_total{operation}`: Kafka requests that failed (`verdict`,
  `dead_letter`, `commit`, `metadata`)
- `kenpin_model_info{version}`: the model release being served (always 1)
- `kenpin_releases_refused_total{reason}`: releases refused, at start or by the hot swap
- `kenpin_model_swaps_total`: releases swapped in
- `kenpin_normals_total{product,outcome}`: OK frames offered as normal samples
  (`stored`, `near_threshold`, `not_drawn`, `daily_cap`, `backlog`, `failed`)
- `kenpin_heatmaps_total{outcome}`: NG heatmap store attempts (`stored`, `store_failed`,
  `render_failed`)
- `kenpin_heatmap_backlog`, `kenpin_heatmap_backlog_bytes`: heatmaps waiting for S3
- `kenpin_consumption_paused`: 1 while the worker takes no frames (backlog full, broker away)
- `kenpin_broker_retries_total{operation}`: verdicts, dead letters, commits retried
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from planes.http_endpoints import WsgiApp, make_endpoints, serve
from schemas.frames import HEADER_NAMES

__all__ = ["Health", "WorkerMetrics", "make_app", "product_label", "serve"]

NAMESPACE = "kenpin"

# Powers of two up to the largest micro-batch anyone should configure.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# From a fast GPU batch to a line that is falling behind.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A frame's stages in the worker: a millisecond or two to seconds behind a backlog.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One forward pass: a few ms for a small batch on a GPU to seconds for a large one on a CPU.
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The `product` label of a dead letter whose frame named none (headers missing or unreadable).
UNKNOWN_PRODUCT = "unknown"


class WorkerMetrics:
    """The worker's Prometheus metrics, in their own registry so tests can make many."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.frames = Counter(
            "frames",
            "Frames taken off Kafka.",
            ["line"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.verdicts = Counter(
            "verdicts",
            "Verdicts published, by line, product and result.",
            ["line", "product", "result"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.deadletters = Counter(
            "deadletters",
            "Dead letters published, by line, product (unknown: the frame did not say) and reason.",
            ["line", "product", "reason"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "batch_size",
            "Frames per forward pass.",
            namespace=NAMESPACE,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "frame_latency_seconds",
            "Time from frame capture to verdict, by line and product.",
            ["line", "product"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "frame_stage_seconds",
            "Where a frame's time went in the worker: to_worker (capture to the worker's poll: "
            "camera, broker, fetch), queue (decode and batch wait), model (its batch's forward "
            "pass).",
            ["stage"],
            namespace=NAMESPACE,
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "inference_seconds",
            "Time of one forward pass over a batch (scores and anomaly maps).",
            namespace=NAMESPACE,
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.s3_errors = Counter(
            "s3_errors",
            "S3 requests that failed, by operation.",
            ["operation"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.live_scores_pending = Gauge(
            "live_scores_pending",
            "Judged frames counted for the line's threshold evidence, not yet added to Redis.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.kafka_errors = Counter(
            "kafka_errors",
            "Kafka requests that failed (sends, commits, metadata), by operation.",
            ["operation"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.releases_refused = Counter(
            "releases_refused",
            "Releases refused, at start or by the hot swap (an older model served), by reason.",
            ["reason"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.late_frames = Counter(
            "late_frames",
            "Frames judged after their line's deadline (late_after_ms) had passed: the PLC "
            "already got TIMEOUT; judged after every frame still in time.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.consumer_restarts = Counter(
            "consumer_restarts",
            "Kafka consumers closed and recreated because a group rebalance stalled.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "model_swaps",
            "Releases swapped in between two batches.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.normals = Counter(
            "normals",
            "OK frames offered to the normal store, by product and what became of them.",
            ["product", "outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.heatmaps = Counter(
            "heatmaps",
            "NG heatmap store attempts: stored, store_failed (retried), render_failed.",
            ["outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.heatmap_backlog = Gauge(
            "heatmap_backlog",
            "NG heatmaps waiting to be stored (grows during an S3 outage).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.heatmap_backlog_bytes = Gauge(
            "heatmap_backlog_bytes",
            "Memory held by the heatmaps waiting to be stored.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.consumption_paused = Gauge(
            "consumption_paused",
            "1 while the worker has paused taking frames (heatmap backlog full, broker "
            "refusing verdicts or commits), else 0.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.broker_retries = Counter(
            "broker_retries",
            "Verdicts, dead letters and commits the broker refused and the worker retried.",
            ["operation"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.model = Info(
            "model",
            "The model release being served.",
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def set_model_version(self, version: str) -> None:
        """Announce the release now served (after a hot swap too)."""
        self.model.info({"version": version})


def product_label(
    headers: list[tuple[str, bytes | None]] | None, known: Callable[[str], bool]
) -> str:
    """The product a record's headers name, for a metric label; `unknown` if none or not `known`.

    Read raw, not through `FrameHeaders`: a dead letter's headers are often the reason
    it is one, and the product may still be there to count it by. Only a product the
    served model knows becomes a label: a camera sending made-up products must not
    grow a series per name.
    """
    wanted = HEADER_NAMES["product"]
    for name, value in headers or ():
        if name == wanted and value:
            try:
                product = value.decode("utf-8")
            except UnicodeDecodeError:
                return UNKNOWN_PRODUCT
            return product if known(product) else UNKNOWN_PRODUCT
    return UNKNOWN_PRODUCT


#: Statuses of a normal life (`starting` -> `joining` -> `ok`); any other (e.g. `stopping`,
#: `degraded`) makes the worker not ready.
_LIFECYCLE = frozenset({"starting", "joining", "ok"})


@dataclass
class Health:
    """What /livez and /readyz report; the worker updates it, the HTTP thread reads it.

    `status` is "starting" until the loop runs, "joining" while it waits for the
    group, then "ok"; the loop may set anything else (e.g. "degraded") to fail
    readiness. `partitions` is None until the loop reports a count with
    `partitions_changed`; until then status "ok" stands for "partitions assigned"
    (what the loop set on assignment before the count existed).
    """

    status: str = "starting"
    model_version: str | None = None
    partitions: int | None = None
    #: Why the served release is not simply the current one, in words (None: nothing to say).
    reason: str | None = None
    #: The release refused last: {"version": ..., "reason": <metric label>}.
    refused: dict[str, str] | None = None
    livez_stall_s: float = 60.0
    startup_grace_s: float = 600.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    started_at: float = field(init=False, repr=False)
    last_turn: float | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock()  # the start-up grace of /livez counts from here

    def update(self, *, status: str | None = None, model_version: str | None = None) -> None:
        with self._lock:
            if status is not None:
                self.status = status
            if model_version is not None:
                self.model_version = model_version

    def loop_turned(self) -> None:
        """Called once per loop step: /livez fails when this stops happening."""
        now = self.clock()
        with self._lock:
            self.last_turn = now

    def partitions_changed(self, count: int) -> None:
        """Called on assignment and revocation with the partitions now held."""
        with self._lock:
            self.partitions = max(0, int(count))

    def model_served(
        self,
        version: str,
        *,
        reason: str | None = None,
        refused: dict[str, str] | None = None,
    ) -> None:
        """The model now served, and why when it is not the current release (a fallback).

        Replaces the previous reason: after a swap to a release that verified,
        an old refusal no longer explains what is served.
        """
        with self._lock:
            self.model_version = version
            self.reason = reason
            self.refused = refused

    def release_refused(self, version: str, reason: str) -> None:
        """A release refused while `model_version` keeps serving: say so in /readyz."""
        with self._lock:
            self.refused = {"version": version, "reason": reason}
            self.reason = f"serving {self.model_version}: release {version} refused ({reason})"

    def live(self) -> tuple[bool, dict[str, Any]]:
        """(alive, body of /livez): the loop turned recently, or start-up is within its grace."""
        now = self.clock()
        with self._lock:
            last, started = self.last_turn, self.started_at
        if last is None:
            alive = now - started <= self.startup_grace_s
            since = None
        else:
            since = now - last
            alive = since <= self.livez_stall_s
        return alive, {
            "live": alive,
            "loop_started": last is not None,
            "seconds_since_loop_turn": None if since is None else round(since, 3),
            "stall_s": self.livez_stall_s,
            "uptime_s": round(now - started, 3),
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body of /readyz): a model loaded and partitions assigned, and what is served."""
        with self._lock:
            snapshot = self._snapshot()
        if snapshot["partitions"] is None:
            assigned = snapshot["status"] == "ok"
        else:
            assigned = snapshot["partitions"] > 0
        ready = (
            snapshot["model_version"] is not None and assigned and snapshot["status"] in _LIFECYCLE
        )
        return ready, {"ready": ready, **snapshot}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "model_version": self.model_version,
            "partitions": self.partitions,
            "reason": self.reason,
            "refused": None if self.refused is None else dict(self.refused),
        }


def make_app(metrics: WorkerMetrics, health: Health) -> WsgiApp:
    """WSGI app: `/livez`, `/readyz` (and `/healthz`) -> JSON, 200 or 503; else -> metrics."""
    return make_endpoints(
        metrics.registry,
        {
            "/livez": health.live,
            "/readyz": health.ready,
            "/healthz": health.ready,  # the probe's name before liveness and readiness split
        },
    )
