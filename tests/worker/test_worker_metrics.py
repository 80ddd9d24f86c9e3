"""Metrics and /healthz, through the WSGI app and over a real loopback socket."""

import json
import socket
import urllib.error
import urllib.request
from wsgiref.util import setup_testing_defaults

from prometheus_client import generate_latest

from worker.metrics import Health, WorkerMetrics, make_app, serve


def call(app, path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def test_metric_names_and_labels():
    metrics = WorkerMetrics()
    metrics.frames.labels(line="l1").inc()
    metrics.verdicts.labels(result="ng").inc(2)
    metrics.deadletters.labels(reason="corrupt_image").inc()
    metrics.batch_size.observe(16)
    metrics.latency.observe(0.042)
    metrics.set_model_version("2024-05-01.1")
    text = generate_latest(metrics.registry).decode()
    assert 'kenpin_frames_total{line="l1"} 1.0' in text
    assert 'kenpin_verdicts_total{result="ng"} 2.0' in text
    assert 'kenpin_deadletters_total{reason="corrupt_image"} 1.0' in text
    assert "kenpin_batch_size_count 1.0" in text
    assert "kenpin_frame_latency_seconds_count 1.0" in text
    assert 'kenpin_model_info{version="2024-05-01.1"} 1.0' in text


def test_separate_registries_do_not_clash():
    WorkerMetrics()
    WorkerMetrics()  # a second instance must not raise "Duplicated timeseries"


def test_healthz_is_503_until_ok_then_200():
    health = Health()
    app = make_app(WorkerMetrics(), health)
    status, headers, body = call(app, "/healthz")
    assert status.startswith("503")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "starting", "model_version": None}
    health.update(status="ok", model_version="v1")
    status, _, body = call(app, "/healthz/")
    assert status.startswith("200")
    assert json.loads(body) == {"status": "ok", "model_version": "v1"}


def test_other_paths_serve_metrics():
    metrics = WorkerMetrics()
    metrics.frames.labels(line="l9").inc()
    status, _, body = call(make_app(metrics, Health()), "/metrics")
    assert status.startswith("200")
    assert b'kenpin_frames_total{line="l9"}' in body


def test_port_zero_turns_serving_off():
    assert serve(make_app(WorkerMetrics(), Health()), 0) is None


def test_serves_over_http_on_loopback():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    health = Health()
    server = serve(make_app(WorkerMetrics(), health), port, addr="127.0.0.1")
    try:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        health.update(status="ok", model_version="v2")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert json.loads(r.read())["model_version"] == "v2"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"kenpin_batch_size" in r.read()
    finally:
        server.shutdown()
        server.server_close()
