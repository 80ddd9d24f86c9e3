"""Metrics, /livez, /readyz and /healthz, through the WSGI app and over a real loopback socket."""

import json
import logging
import os
import socket
import urllib.error
import urllib.request
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import generate_latest

from worker.metrics import Health, WorkerMetrics, make_app, serve
from worker.settings import WorkerSettings


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
    metrics.verdicts.labels(line="l1", product="bottle", result="ng").inc(2)
    metrics.deadletters.labels(line="l1", product="unknown", reason="corrupt_image").inc()
    metrics.batch_size.observe(16)
    metrics.latency.labels(line="l1", product="bottle").observe(0.042)
    metrics.set_model_version("2024-05-01.1")
    text = generate_latest(metrics.registry).decode()
    assert 'kenpin_frames_total{line="l1"} 1.0' in text
    assert 'kenpin_verdicts_total{line="l1",product="bottle",result="ng"} 2.0' in text
    letters = 'kenpin_deadletters_total{line="l1",product="unknown",reason="corrupt_image"} 1.0'
    assert letters in text
    assert "kenpin_batch_size_count 1.0" in text
    assert 'kenpin_frame_latency_seconds_count{line="l1",product="bottle"} 1.0' in text
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
    payload = json.loads(body)
    assert (payload["ready"], payload["status"], payload["model_version"]) == (
        False,
        "starting",
        None,
    )
    health.update(status="ok", model_version="v1")
    status, _, body = call(app, "/healthz/")
    assert status.startswith("200")
    assert json.loads(body)["model_version"] == "v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_readyz_needs_a_model_and_partitions():
    health = Health()
    app = make_app(WorkerMetrics(), health)
    health.partitions_changed(2)
    status, _, body = call(app, "/readyz")
    assert status.startswith("503") and json.loads(body)["ready"] is False  # no model yet
    health.model_served("v1")
    health.update(status="ok")
    status, headers, body = call(app, "/readyz")
    assert status.startswith("200") and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "ready": True,
        "status": "ok",
        "model_version": "v1",
        "partitions": 2,
        "reason": None,
        "refused": None,
    }
    # status "ok" on an empty assignment (more workers than partitions): not ready
    health.partitions_changed(0)
    status, _, body = call(app, "/readyz")
    assert status.startswith("503") and json.loads(body)["partitions"] == 0
    health.partitions_changed(1)
    assert call(app, "/readyz")[0].startswith("200")
    health.update(status="stopping")
    assert call(app, "/readyz")[0].startswith("503")
    assert call(app, "/healthz")[0].startswith("503")  # an alias of /readyz


def test_readyz_without_a_partition_count_trusts_status_ok():
    """A loop that does not report partitions yet: status ok is what it set on assignment."""
    health = Health()
    health.update(model_version="v1", status="joining")
    assert health.ready()[0] is False
    health.update(status="ok")
    assert health.ready()[0] is True


def test_readyz_says_which_release_is_served_and_why():
    health = Health()
    health.update(status="ok")
    health.partitions_changed(1)
    health.model_served(
        "v1",
        reason="serving last good v1: current release v2 refused (not_safetensors)",
        refused={"version": "v2", "reason": "not_safetensors"},
    )
    status, _, body = call(make_app(WorkerMetrics(), health), "/readyz")
    payload = json.loads(body)
    assert status.startswith("200")
    assert payload["model_version"] == "v1"
    assert payload["refused"] == {"version": "v2", "reason": "not_safetensors"}
    assert "v2 refused (not_safetensors)" in payload["reason"]
    health.release_refused("v3", "sha256_mismatch")  # refused later, while running
    payload = health.ready()[1]
    assert payload["refused"] == {"version": "v3", "reason": "sha256_mismatch"}
    assert payload["reason"] == "serving v1: release v3 refused (sha256_mismatch)"
    health.model_served("v4")  # a release that verified: nothing left to explain
    assert health.ready()[1]["reason"] is None and health.ready()[1]["refused"] is None


def test_livez_fails_when_the_loop_stalls():
    clock = Clock()
    health = Health(livez_stall_s=60, startup_grace_s=300, clock=clock)
    app = make_app(WorkerMetrics(), health)
    status, headers, body = call(app, "/livez")
    assert status.startswith("200") and headers["Content-Type"] == "application/json"
    assert json.loads(body)["loop_started"] is False  # within the start-up grace
    health.loop_turned()
    clock.now += 59
    status, _, body = call(app, "/livez/")
    assert status.startswith("200")
    assert json.loads(body)["seconds_since_loop_turn"] == 59
    clock.now += 2  # a loop stuck for 61 s
    status, _, body = call(app, "/livez")
    assert status.startswith("503")
    assert json.loads(body) == {
        "live": False,
        "loop_started": True,
        "seconds_since_loop_turn": 61,
        "stall_s": 60,
        "uptime_s": 61,
    }
    health.loop_turned()
    assert call(app, "/livez")[0].startswith("200")


def test_livez_fails_when_the_loop_never_starts_within_the_grace():
    clock = Clock()
    health = Health(livez_stall_s=60, startup_grace_s=300, clock=clock)
    clock.now += 300
    assert health.live()[0] is True
    clock.now += 1
    alive, payload = health.live()
    assert alive is False and payload["loop_started"] is False


def test_livez_is_independent_of_readiness():
    """Waiting for partitions is not a reason to be restarted."""
    health = Health()
    health.loop_turned()
    health.partitions_changed(0)
    assert health.live()[0] is True and health.ready()[0] is False


def test_other_paths_serve_metrics():
    metrics = WorkerMetrics()
    metrics.frames.labels(line="l9").inc()
    status, _, body = call(make_app(metrics, Health()), "/metrics")
    assert status.startswith("200")
    assert b'kenpin_frames_total{line="l9"}' in body


def test_port_zero_turns_serving_off():
    assert serve(make_app(WorkerMetrics(), Health()), 0) is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serves_over_http_on_loopback():
    port = _free_port()
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
        health.loop_turned()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as r:
            assert json.loads(r.read())["live"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert json.loads(r.read())["ready"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"kenpin_batch_size" in r.read()
    finally:
        server.shutdown()
        server.server_close()


def test_binds_loopback_by_default():
    server = serve(make_app(WorkerMetrics(), Health()), _free_port())
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


def test_bind_host_is_a_setting(monkeypatch):
    for name in list(os.environ):
        if name.startswith("KENPIN_"):
            monkeypatch.delenv(name)
    assert WorkerSettings().metrics_host == "127.0.0.1"
    assert WorkerSettings().livez_stall_s == 60
    monkeypatch.setenv("KENPIN_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("KENPIN_LIVEZ_STALL_S", "15")
    settings = WorkerSettings()
    assert (settings.metrics_host, settings.livez_stall_s) == ("0.0.0.0", 15)


@pytest.fixture
def restore_root_logging():
    """`main` configures logging for the process; put the test run's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_worker_command_binds_the_configured_host(monkeypatch, capsys, restore_root_logging):
    """`kenpin-worker run` serves the probes on KENPIN_METRICS_HOST, before loading a model."""
    import worker.metrics
    import worker.startup
    from worker.cli import main

    bound: list[tuple[int, str]] = []
    health_seen: list[Health] = []

    def fake_serve(app, port, addr="unused"):
        bound.append((port, addr))
        return None

    def no_model(settings, control, store, *, metrics, health):
        health_seen.append(health)
        raise worker.startup.NoModelToServe("nothing verifies")

    monkeypatch.setenv("KENPIN_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("KENPIN_METRICS_PORT", "9999")
    monkeypatch.setenv("KENPIN_LIVEZ_STALL_S", "7")
    monkeypatch.setenv("KENPIN_LOG_FORMAT", "json")
    monkeypatch.setattr(worker.metrics, "serve", fake_serve)
    monkeypatch.setattr(worker.startup, "start_model", no_model)
    assert main(["run"]) == 2  # nothing to serve: a clean exit, no traceback
    assert bound == [(9999, "0.0.0.0")]
    assert health_seen[0].livez_stall_s == 7
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    event = json.loads(lines[0])
    assert (event["event"], event["detail"]) == ("no model to serve, exiting", "nothing verifies")
