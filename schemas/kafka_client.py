"""How every kenpin Kafka client reaches the brokers: bootstrap servers, TLS, SASL.

The worker, the console and the PLC bridge each read the same plant-wide
``KENPIN_KAFKA_*`` settings; this turns them into kafka-python's keyword
arguments once, so that all three reach a secured cluster the same way. Only
what the protocol uses is set: a PLAINTEXT client carries no stray TLS or SASL
options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr


class KafkaConnection(Protocol):
    """The connection fields a client's settings must have (names as in the settings)."""

    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str | None: ...
    @property
    def kafka_sasl_username(self) -> str | None: ...
    @property
    def kafka_sasl_password(self) -> SecretStr: ...
    @property
    def kafka_ssl_cafile(self) -> Path | None: ...
    @property
    def kafka_ssl_certfile(self) -> Path | None: ...
    @property
    def kafka_ssl_keyfile(self) -> Path | None: ...


def bootstrap_servers(settings: KafkaConnection) -> list[str]:
    """`"a:9092, b:9092"` -> `["a:9092", "b:9092"]`."""
    return [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]


def security_config(settings: KafkaConnection) -> dict[str, Any]:
    """Where the brokers are and how to reach them: what every kenpin Kafka client shares."""
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        config["ssl_check_hostname"] = True
        for option, path in (
            ("ssl_cafile", settings.kafka_ssl_cafile),
            ("ssl_certfile", settings.kafka_ssl_certfile),
            ("ssl_keyfile", settings.kafka_ssl_keyfile),
        ):
            if path is not None:
                config[option] = str(path)
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return config
