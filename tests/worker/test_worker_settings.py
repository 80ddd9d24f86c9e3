"""WorkerSettings: defaults, KENPIN_ environment variables, and the checks that fail early."""

import pytest
from pydantic import ValidationError

from worker.settings import WorkerSettings


def test_defaults_match_the_contracts(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("KENPIN_"):
            monkeypatch.delenv(name)
    s = WorkerSettings()
    assert s.frames_topic_pattern == r"^kenpin\.frames\..*"
    assert s.verdicts_topic_prefix == "kenpin.verdicts."
    assert s.deadletter_topic == "kenpin.deadletter"
    assert s.consumer_group == "kenpin-workers"
    assert s.s3_bucket == "kenpin"
    assert (s.max_batch, s.max_wait_ms, s.decode_threads) == (16, 50, 2)
    assert s.max_image_pixels == 40_000_000
    assert s.metrics_port == 9108
    assert (s.device, s.precision, s.log_format) == ("auto", "fp32", "auto")
    assert s.model_s3_key is None


def test_environment_variables_with_prefix(monkeypatch):
    monkeypatch.setenv("KENPIN_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("KENPIN_DEVICE", "cuda")
    monkeypatch.setenv("KENPIN_PRECISION", "bf16")
    monkeypatch.setenv("KENPIN_MAX_BATCH", "32")
    monkeypatch.setenv("KENPIN_S3_SECURE", "true")
    monkeypatch.setenv("KENPIN_S3_SECRET_KEY", "example-secret")
    monkeypatch.setenv("KENPIN_METRICS_PORT", "0")
    s = WorkerSettings()
    assert s.kafka_bootstrap == "broker:9092"
    assert (s.device, s.precision, s.max_batch) == ("cuda", "bf16", 32)
    assert s.s3_secure is True
    assert s.metrics_port == 0
    assert s.s3_secret_key.get_secret_value() == "example-secret"
    assert "example-secret" not in repr(s) and "example-secret" not in str(s.model_dump())


@pytest.mark.parametrize(
    "overrides",
    [
        {"device": "tpu"},
        {"precision": "int8"},
        {"max_batch": 0},
        {"log_format": "xml"},
        {"metrics_port": 70000},
        {"frames_topic_pattern": "^kenpin\\.frames\\.(("},
        {"s3_endpoint": "http://minio:9000"},
        {"kafka_max_message_bytes": 1_048_576},  # dead letters of 5 MiB would not fit
    ],
)
def test_invalid_values_fail_at_start(overrides):
    with pytest.raises(ValidationError):
        WorkerSettings(**overrides)


def test_small_broker_limit_with_matching_dead_letter_limit():
    s = WorkerSettings(kafka_max_message_bytes=1_048_576, deadletter_max_original_bytes=700_000)
    assert s.deadletter_max_original_bytes == 700_000
