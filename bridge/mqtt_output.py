"""The same outcomes on MQTT, for plants whose PLCs or SCADA read a broker instead of OPC UA.

Topic `kenpin/<line>/verdict` (`schemas.topics.mqtt_verdict_topic`), payload the
outcome's JSON (`bridge.outcome.Outcome`, what the OPC UA variable `Json` holds),
QoS 1 and retained: a client that (re)connects gets the line's last outcome at
once. paho-mqtt runs its network loop in its own thread and reconnects by itself;
outcomes published while the broker is away wait in a bounded queue, so a
subscriber must match them by part id and sequence, never assume they are live.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from bridge.outcome import Outcome
from bridge.settings import BridgeSettings
from planes.logs import get_logger
from schemas.topics import mqtt_verdict_topic

log = get_logger(__name__)

#: Outcomes kept while the broker is away; beyond it paho refuses new ones (counted as lost).
MAX_QUEUED = 1000
QOS = 1


class MqttOutput:
    """A paho client connected in the background; `publish` never blocks the OPC UA loop."""

    def __init__(self, settings: BridgeSettings) -> None:
        assert settings.mqtt_url is not None
        url = urlsplit(settings.mqtt_url)
        self.prefix = settings.mqtt_topic_prefix
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=settings.mqtt_client_id
        )
        if settings.mqtt_username:
            self.client.username_pw_set(
                settings.mqtt_username, settings.mqtt_password.get_secret_value() or None
            )
        if url.scheme == "mqtts":
            self.client.tls_set(
                ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.host = url.hostname or "localhost"
        self.port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        self.lost = 0
        self.connected = threading.Event()

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def publish(self, outcomes: Iterable[Outcome]) -> list[mqtt.MQTTMessageInfo]:
        """Queue each outcome for the broker; the infos say when the broker has it (PUBACK).

        While the broker is away paho keeps QoS 1 messages (up to MAX_QUEUED) and sends
        them once it reconnects.
        """
        infos = []
        for outcome in outcomes:
            info = self.client.publish(
                mqtt_verdict_topic(outcome.line, self.prefix),
                outcome.to_json(),
                qos=QOS,
                retain=True,
            )
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self.lost += 1
                log.warning("mqtt queue full, outcome dropped", line=outcome.line, lost=self.lost)
            infos.append(info)
        return infos

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt connection refused", reason=str(reason_code))
        else:
            log.info("mqtt connected", host=self.host, port=self.port)
            self.connected.set()

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure:  # not our own disconnect at shutdown
            log.warning("mqtt disconnected, reconnecting", reason=str(reason_code))
