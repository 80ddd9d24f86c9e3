"""The one small HTTP server of every kenpin process: `/metrics` and JSON probes.

The worker and the trainer both answer Prometheus scrapes and the orchestrator's
`/livez` and `/readyz`; what each reports differs, the serving does not, so it
is written once here. A WSGI app in a daemon thread is enough: scrapes and probes
are a few requests a minute, and the standard library's server keeps kenpin free
of a web framework. It binds loopback unless told otherwise: the endpoints are
unauthenticated.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: A probe: (passing, JSON body). Passing answers 200, failing 503.
Probe = Callable[[], tuple[bool, dict[str, Any]]]


def make_endpoints(registry: CollectorRegistry, probes: Mapping[str, Probe]) -> WsgiApp:
    """WSGI app: each path of `probes` -> its JSON, 200 or 503; any other path -> metrics."""
    metrics_app = make_wsgi_app(registry)

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
    (`0.0.0.0` in a pod) is a deployment's explicit choice. Call `.shutdown()` on
    the returned server to stop it.
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
    """No access log: probes every few seconds would drown the process's own events."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        pass
