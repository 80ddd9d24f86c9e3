"""Bridge settings: refused when no client could connect safely; the broker address shared."""

import pytest
from pydantic import ValidationError

from bridge.cli import main
from bridge.settings import BridgeSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("KENPIN_"):
            monkeypatch.delenv(name)


def test_no_certificate_means_no_server_unless_asked(monkeypatch):
    settings = BridgeSettings(opcua_password="pw")
    with pytest.raises(ValueError, match="OPCUA_ALLOW_UNENCRYPTED"):
        settings.check_opcua()
    BridgeSettings(opcua_password="pw", opcua_allow_unencrypted=True).check_opcua()


def test_no_password_means_no_server_unless_anonymous_is_allowed(tmp_path):
    cert = dict(opcua_certificate=tmp_path / "c.der", opcua_private_key=tmp_path / "k.pem")
    with pytest.raises(ValueError, match="OPCUA_PASSWORD"):
        BridgeSettings(**cert).check_opcua()
    BridgeSettings(**cert, opcua_allow_anonymous=True).check_opcua()


def test_a_certificate_needs_its_key(tmp_path):
    with pytest.raises(ValidationError, match="both"):
        BridgeSettings(opcua_certificate=tmp_path / "c.der")


def test_the_broker_address_may_come_from_the_plant_wide_variable(monkeypatch):
    monkeypatch.setenv("KENPIN_KAFKA_BOOTSTRAP", "plant:9092")
    assert BridgeSettings().kafka_bootstrap == "plant:9092"
    monkeypatch.setenv("KENPIN_BRIDGE_KAFKA_BOOTSTRAP", "zone:9092")
    assert BridgeSettings().kafka_bootstrap == "zone:9092"


def test_per_line_deadlines(monkeypatch):
    monkeypatch.setenv("KENPIN_BRIDGE_LINE_DEADLINES_MS", '{"l2": 800}')
    settings = BridgeSettings()
    assert (settings.deadline_s("l1"), settings.deadline_s("l2")) == (0.5, 0.8)
    with pytest.raises(ValidationError):
        BridgeSettings(line_deadlines_ms={"l1": 0})
    with pytest.raises(ValidationError):
        BridgeSettings(lines=["a.b"])
    with pytest.raises(ValidationError):
        BridgeSettings(mqtt_url="http://broker")


def test_the_cli_says_what_is_wrong_in_one_line(capsys, monkeypatch):
    assert main(["opcua"]) == 2
    assert "OPCUA_ALLOW_UNENCRYPTED" in capsys.readouterr().err
    monkeypatch.setenv("KENPIN_BRIDGE_DEADLINE_MS", "-1")
    assert main(["mqtt", "--mqtt-url", "mqtt://x:1883"]) == 2
    assert "KENPIN_BRIDGE_DEADLINE_MS" in capsys.readouterr().err


def test_a_secured_broker_is_reached_with_the_plant_wide_kafka_settings(monkeypatch, tmp_path):
    from bridge.kafka_source import consumer_config

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KENPIN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KENPIN_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KENPIN_KAFKA_SASL_USERNAME", "bridge")
    monkeypatch.setenv("KENPIN_KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("KENPIN_KAFKA_SSL_CAFILE", str(ca))
    config = consumer_config(BridgeSettings())
    assert (config["security_protocol"], config["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("bridge", "pw")
    assert config["ssl_cafile"] == str(ca) and config["ssl_check_hostname"] is True
    assert "pw" not in repr(BridgeSettings())
    monkeypatch.delenv("KENPIN_KAFKA_SASL_PASSWORD")
    with pytest.raises(ValidationError, match="kafka_sasl_password"):
        BridgeSettings()
    assert "security_protocol" in consumer_config(
        BridgeSettings(kafka_security_protocol="PLAINTEXT")
    )


def test_an_empty_trust_list_is_refused_at_start(tmp_path):
    settings = BridgeSettings(opcua_password="pw", opcua_allow_unencrypted=True)
    with pytest.raises(ValueError, match="no client certificate"):
        settings.model_copy(update={"opcua_trusted_clients": tmp_path}).check_opcua()
