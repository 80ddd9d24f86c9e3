"""How every kenpin Kafka client reaches the brokers: bootstrap servers, TLS, SASL, fetch sizes.

The worker, the console and the PLC bridge each read the same plant-wide
``KENPIN_KAFKA_*`` settings (`planes.settings.KafkaSettings`); this turns them
into kafka-python's keyword arguments once, so that all three reach a secured
cluster the same way. Only what the protocol uses is set: a PLAINTEXT client
carries no stray TLS or SASL options.
"""

from __future__ import annotations

from typing import Any

from planes.settings import KafkaSettings


def bootstrap_servers(settings: KafkaSettings) -> list[str]:
    """`"a:9092, b:9092"` -> `["a:9092", "b:9092"]`."""
    return [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]


def security_config(settings: KafkaSettings) -> dict[str, Any]:
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


#: kafka-python's fetch_max_bytes default (50 MiB), kept unless one record is larger.
FETCH_MAX_BYTES = 52_428_800
#: Room for the response's own framing above the records it carries.
RESPONSE_OVERHEAD_BYTES = 1024 * 1024


def fetch_options(settings: KafkaSettings) -> dict[str, int]:
    """How a consumer fetches: records up to `kafka_max_message_bytes` (a full frame), and
    how long the broker may hold a fetch that has nothing yet (`kafka_fetch_max_wait_ms`).

    One fetch response carries several partitions, and the client refuses any
    network frame over `receive_message_max_bytes` (1 MB by default: one
    full-resolution frame broke it), so that limit must exceed the whole fetch. The
    wait bounds how long a new record sits behind a fetch already in flight:
    kafka-python's default, 500 ms, is most of a PLC's deadline.
    """
    fetch = max(FETCH_MAX_BYTES, settings.kafka_max_message_bytes)
    return {
        "max_partition_fetch_bytes": settings.kafka_max_message_bytes,
        "fetch_max_bytes": fetch,
        "receive_message_max_bytes": fetch + RESPONSE_OVERHEAD_BYTES,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }
