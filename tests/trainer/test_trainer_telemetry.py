"""The trainer's metrics and probes, through their WSGI app (no server, no Redis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from wsgiref.util import setup_testing_defaults

from prometheus_client import generate_latest

from schemas.control import RetrainOutcome
from trainer.service.telemetry import TrainerHealth, TrainerMetrics, make_trainer_app


def call(app, path: str) -> tuple[str, bytes]:
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status

    body = b"".join(app(environ, start_response))
    return seen["status"], body


def outcome(status: str, **stages: float) -> RetrainOutcome:
    return RetrainOutcome(
        request_id="1-0", status=status, updated=datetime.now(UTC), stages=dict(stages)
    )


def test_last_outcome_is_one_series_per_outcome_and_only_the_last_is_one():
    metrics = TrainerMetrics()
    text = generate_latest(metrics.registry).decode()
    assert 'kenpin_trainer_last_outcome{outcome="refused"} 0.0' in text  # there before a run
    metrics.run_finished(outcome("refused"))
    metrics.run_finished(outcome("released"))
    text = generate_latest(metrics.registry).decode()
    assert 'kenpin_trainer_last_outcome{outcome="released"} 1.0' in text
    assert 'kenpin_trainer_last_outcome{outcome="refused"} 0.0' in text
    assert 'kenpin_trainer_runs_total{outcome="refused"} 1.0' in text
    assert 'kenpin_trainer_runs_total{outcome="released"} 1.0' in text


def test_stage_durations_and_queue_depth_names():
    metrics = TrainerMetrics()
    metrics.stage_finished("train", 42.0)
    metrics.queue_depth.set(3)
    text = generate_latest(metrics.registry).decode()
    assert 'kenpin_trainer_stage_seconds_count{stage="train"} 1.0' in text
    assert 'kenpin_trainer_stage_seconds_sum{stage="train"} 42.0' in text
    assert "kenpin_trainer_queue_depth 3.0" in text


def test_live_while_the_loop_turns_or_a_run_holds_it_ready_once_redis_answered():
    now = [0.0]
    health = TrainerHealth(livez_stall_s=60, clock=lambda: now[0])
    app = make_trainer_app(TrainerMetrics(), health)
    assert call(app, "/livez")[0].startswith("200")  # within the start-up allowance
    assert call(app, "/readyz")[0].startswith("503")  # the loop has not turned
    health.loop_turned(redis_ok=True)
    status, body = call(app, "/readyz")
    assert status.startswith("200") and json.loads(body)["redis"] is True
    now[0] = 120.0
    assert call(app, "/livez")[0].startswith("503")  # stalled outside a run
    health.run_started()
    now[0] = 7200.0  # two hours of training hold the loop: still alive
    status, body = call(app, "/livez")
    assert status.startswith("200") and json.loads(body)["running_s"] == 7080.0
    health.run_ended()
    health.stop()
    assert call(app, "/readyz")[0].startswith("503")
    assert b"kenpin_trainer_queue_depth" in call(app, "/metrics")[1]
