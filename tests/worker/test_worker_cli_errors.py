"""`kenpin-worker run` ends a start it cannot finish with one line and exit status 2.

The servers here are absent on purpose (nothing listens on the default ports), and the
model start and the Kafka clients are stand-ins: what is tested is what the command
says, not the servers (tests/integration/test_secured_clients.py does that).
"""

from __future__ import annotations

import logging

import pytest
from kafka.errors import NoBrokersAvailable

from worker.cli import main


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_invalid_settings_are_one_line_naming_the_variable(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("KENPIN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")  # no mechanism, no user
    assert main(["run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("kenpin-worker: invalid settings: ")
    assert "kafka_sasl_mechanism" in line


def test_no_broker_at_start_is_one_line_not_a_traceback(monkeypatch, capsys, restore_root_logging):
    import worker.service
    import worker.startup

    class Started:
        model = type("Model", (), {"version": "v1"})()
        refused: list = []

    def no_broker(*args, **kwargs):
        raise NoBrokersAvailable()

    monkeypatch.setenv("KENPIN_METRICS_PORT", "0")
    monkeypatch.setenv("KENPIN_HOT_SWAP", "false")
    monkeypatch.setenv("KENPIN_S3_ENDPOINT", "127.0.0.1:1")  # nothing there: an outage
    monkeypatch.setenv("KENPIN_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("KENPIN_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setattr(worker.startup, "start_model", lambda *a, **k: Started())
    monkeypatch.setattr(worker.service, "Worker", no_broker)
    assert main(["run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(
        "kenpin-worker: no Kafka broker answered at localhost:9092 over SSL"
    )
    assert not any("Traceback" in line for line in lines)
