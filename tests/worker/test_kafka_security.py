"""TLS and SASL reach every Kafka client kenpin makes, from settings alone.

Tansu (the local broker) takes `--cert`/`--authentication` flags but in 0.6.0
serves neither TLS nor a SASL mechanism kafka-python shares, so the options are
checked here, on what each client is built with.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from worker import kafka_io
from worker.settings import WorkerSettings


@pytest.fixture
def pem(tmp_path):
    def make(name: str):
        path = tmp_path / name
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        return path

    return make


def test_plaintext_carries_no_tls_or_sasl_options():
    config = kafka_io.security_config(WorkerSettings(kafka_bootstrap="a:9092, b:9092"))
    assert config == {"bootstrap_servers": ["a:9092", "b:9092"], "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_with_ca_and_client_certificate_reaches_every_client(pem):
    settings = WorkerSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="kenpin",
        kafka_sasl_password=SecretStr("s3cret"),
        kafka_ssl_cafile=pem("ca.pem"),
        kafka_ssl_certfile=pem("client.pem"),
        kafka_ssl_keyfile=pem("client.key"),
    )
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "kenpin",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": str(settings.kafka_ssl_cafile),
        "ssl_certfile": str(settings.kafka_ssl_certfile),
        "ssl_keyfile": str(settings.kafka_ssl_keyfile),
        "ssl_check_hostname": True,
    }
    for config in (
        kafka_io.consumer_config(settings),
        kafka_io.producer_config(settings),
        kafka_io.security_config(settings),  # what TopicAdmin's admin client gets
    ):
        assert {k: config.get(k) for k in expected} == expected
    assert "s3cret" not in repr(settings)


def test_sasl_plaintext_plain_sends_no_tls_options():
    settings = WorkerSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password=SecretStr("p"),
    )
    config = kafka_io.security_config(settings)
    assert config["sasl_mechanism"] == "PLAIN"
    assert not any(k.startswith("ssl_") for k in config)


def test_ssl_without_a_ca_file_uses_the_system_cas(pem):
    config = kafka_io.security_config(WorkerSettings(kafka_security_protocol="SSL"))
    assert config["security_protocol"] == "SSL" and "ssl_cafile" not in config
    assert "sasl_mechanism" not in config


@pytest.mark.parametrize(
    "values",
    [
        {"kafka_security_protocol": "SASL_SSL"},  # no mechanism
        {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"},  # no user
        {"kafka_security_protocol": "TLS"},  # not a protocol
        {"kafka_sasl_mechanism": "GSSAPI"},  # not offered
    ],
)
def test_incomplete_or_unknown_security_is_refused_at_start(values):
    with pytest.raises(ValidationError):
        WorkerSettings(**values)


def test_a_client_certificate_needs_its_key(pem):
    with pytest.raises(ValidationError, match="go together"):
        WorkerSettings(kafka_security_protocol="SSL", kafka_ssl_certfile=pem("c.pem"))


def test_a_missing_ca_file_is_refused_at_start(tmp_path):
    with pytest.raises(ValidationError):
        WorkerSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "none.pem")


def test_created_topics_get_retention_and_room_for_the_largest_frame():
    settings = WorkerSettings()
    configs = kafka_io.topic_configs(settings)
    assert int(configs["max.message.bytes"]) >= settings.kafka_max_message_bytes
    assert configs["retention.ms"] == str(settings.topic_retention_ms)
    with pytest.raises(ValidationError, match="below"):
        WorkerSettings(kafka_max_message_bytes=8 * 2**20, topic_max_message_bytes=2**20)
