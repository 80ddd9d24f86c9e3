"""What a worker tells Prometheus and the orchestrator: throughput, outcomes, latency, health.

One HTTP port serves both `/metrics` (Prometheus text format) and `/healthz`
(JSON: status and the model version being served). A WSGI app in a daemon
thread is enough: scrapes and probes are a few requests a minute, and the
standard library's server keeps the worker free of a web framework.

Metric names (all prefixed `kenpin_`):

- `kenpin_frames_total{line}`: frames taken off Kafka
- `kenpin_verdicts_total{result}`: verdicts published, `ok` / `ng`
- `kenpin_deadletters_total{reason}`: dead letters published, by reason code
- `kenpin_batch_size`: frames per forward pass (histogram)
- `kenpin_frame_latency_seconds`: capture time to verdict (histogram)
- `kenpin_model_info{version}`: the model release being served (always 1)
- `kenpin_releases_refused_total{reason}`: releases the hot swap refused
- `kenpin_model_swaps_total`: releases swapped in
- `kenpin_normals_total{product,outcome}`: OK frames offered as normal samples
  (`stored`, `near_threshold`, `not_drawn`, `daily_cap`, `backlog`, `failed`)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, make_wsgi_app

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
            "Releases refused by the hot swap (the old model kept serving), by reason.",
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
        self.model = Info(
            "model",
            "The model release being served.",
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def set_model_version(self, version: str) -> None:
        """Announce the release now served (after a hot swap too)."""
        self.model.info({"version": version})


@dataclass
class Health:
    """What /healthz reports; the worker loop updates it, the HTTP thread reads it.

    `status` is "starting" until the first model is loaded, then "ok"; the loop
    may set anything else (e.g. "degraded") to fail the probe.
    """

    status: str = "starting"
    model_version: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, *, status: str | None = None, model_version: str | None = None) -> None:
        with self._lock:
            if status is not None:
                self.status = status
            if model_version is not None:
                self.model_version = model_version

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"status": self.status, "model_version": self.model_version}


def make_app(metrics: WorkerMetrics, health: Health) -> WsgiApp:
    """WSGI app: `/healthz` -> JSON (200 if status is "ok", else 503); anything else -> metrics."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/").rstrip("/") == "/healthz":
            snapshot = health.snapshot()
            body = json.dumps(snapshot).encode()
            status = "200 OK" if snapshot["status"] == "ok" else "503 Service Unavailable"
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return metrics_app(environ, start_response)

    return app


def serve(app: WsgiApp, port: int, addr: str = "0.0.0.0") -> WSGIServer | None:
    """Serve `app` on `port` from a daemon thread; port 0 means metrics are off (returns None).

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
