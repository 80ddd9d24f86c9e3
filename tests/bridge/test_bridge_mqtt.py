"""MQTT output against a real broker (Debian's mosquitto on loopback): retained, QoS 1, JSON."""

import json
import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest

from bridge.mqtt_output import MqttOutput
from bridge.outcome import Outcome
from bridge.settings import BridgeSettings

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (deploy/setup installs Debian's)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(timeout=10)


def outcome(sequence: int, verdict: str, part_id: str) -> Outcome:
    return Outcome(
        line="l1",
        sequence=sequence,
        verdict=verdict,
        frame_id=f"f{sequence}",
        part_id=part_id,
        capture_sequence=sequence,
        published_time=datetime.now(UTC),
        deadline_ms=500.0,
    )


def test_each_outcome_is_published_and_the_last_one_retained(broker):
    output = MqttOutput(BridgeSettings(mqtt_url=f"mqtt://127.0.0.1:{broker}"))
    output.start()
    try:
        assert output.connected.wait(10), "the bridge did not connect to the broker"
        for info in output.publish([outcome(1, "OK", "P-1"), outcome(2, "TIMEOUT", "P-2")]):
            info.wait_for_publish(timeout=10)  # the broker has it (QoS 1: acknowledged)
            assert info.is_published()
        received: list[mqtt.MQTTMessage] = []
        got = threading.Event()

        def on_message(client, userdata, message):
            received.append(message)
            got.set()

        # a subscriber that connects afterwards still gets the line's last outcome
        deadline = time.monotonic() + 10
        while not got.is_set() and time.monotonic() < deadline:
            late = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            late.on_message = on_message
            late.connect("127.0.0.1", broker)
            late.subscribe("kenpin/l1/verdict", qos=1)
            late.loop_start()
            got.wait(1.0)
            late.loop_stop()
            late.disconnect()
        assert received, "no retained outcome on kenpin/l1/verdict"
        message = received[0]
        assert message.retain and message.qos == 1
        payload = json.loads(message.payload)
        assert (payload["sequence"], payload["verdict"], payload["part_id"]) == (
            2,
            "TIMEOUT",
            "P-2",
        )
    finally:
        output.close()
