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

A WSGI app in a daemon thread is enough: scrapes and probes are a few requests a
minute, and the standard library's server keeps the worker free of a web
framework. It binds loopback unless told otherwise (`KENPIN_METRICS_HOST`): the
endpoints are unauthenticated.

Metric names (all prefixed `kenpin_`):

- `kenpin_frames_total{line}`: frames taken off Kafka
- `kenpin_verdicts_total{result}`: verdicts published, `ok` / `ng`
- `kenpin_deadletters_total{reason}`: dead letters published, by reason code
- `kenpin_batch_size`: frames per forward pass (histogram)
- `kenpin_frame_latency_seconds`: capture time to verdict (histogram)
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

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    make_wsgi_app,
)

NAMESPACE = "kenpin"

# Powers of two up to the largest micro-batch anyone should configure.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# From a fast GPU batch to a line that is falling behind.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


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
            "Verdicts published.",
            ["result"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.deadletters = Counter(
            "deadletters",
            "Dead letters published.",
            ["reason"],
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
            "Time from frame capture to verdict.",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.releases_refused = Counter(
            "releases_refused",
            "Releases refused, at start or by the hot swap (an older model served), by reason.",
            ["reason"],
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
    metrics_app = make_wsgi_app(metrics.registry)
    probes: dict[str, Callable[[], tuple[bool, dict[str, Any]]]] = {
        "/livez": health.live,
        "/readyz": health.ready,
        "/healthz": health.ready,  # the probe's name before liveness and readiness split
    }

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", "/").rstrip("/"))
        if probe is not None:
            good, payload = probe()
            body = json.dumps(payload).encode()
            status = "200 OK" if good else "503 Service Unavailable"
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return metrics_app(environ, start_response)

    return app


def serve(app: WsgiApp, port: int, addr: str = "127.0.0.1") -> WSGIServer | None:
    """Serve `app` on `addr`:`port` from a daemon thread; port 0 means off (returns None).

    Loopback by default: the endpoints have no authentication, so exposing them
    (`KENPIN_METRICS_HOST=0.0.0.0` in a pod) is a deployment's explicit choice.
    Call `.shutdown()` on the returned server to stop it.
    """
    if port == 0:
        return None
    server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="kenpin-metrics", daemon=True).start()
    return server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A thread per request, so a slow scraper cannot block a liveness probe."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log: probes every few seconds would drown the worker's own events."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        pass
