"""Every knob of the PLC bridge, from `KENPIN_BRIDGE_*` environment variables.

A prefix of its own: the bridge runs beside the plant's PLCs, often in another
network zone than the workers, and shares only the broker with them. How it
reaches the broker (and logs) may still come from the plant-wide `KENPIN_KAFKA_*`
variables (`KENPIN_KAFKA_BOOTSTRAP`): its own `KENPIN_BRIDGE_KAFKA_*` win.

Example: ``KENPIN_BRIDGE_KAFKA_BOOTSTRAP=broker:9092 KENPIN_BRIDGE_OPCUA_PASSWORD=...
KENPIN_BRIDGE_OPCUA_CERTIFICATE=/etc/kenpin/bridge.der
KENPIN_BRIDGE_OPCUA_PRIVATE_KEY=/etc/kenpin/bridge.pem kenpin-bridge opcua``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    DirectoryPath,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from planes.settings import ENV_PREFIX, KafkaSettings, LogSettings
from schemas.common import NAME_PATTERN
from schemas.plc import OPCUA_APPLICATION_URI, OPCUA_NAMESPACE_URI
from schemas.topics import (
    DEADLETTER_TOPIC,
    FRAMES_TOPIC_PATTERN,
    MQTT_TOPIC_PREFIX,
    PARTS_TOPIC_PATTERN,
    VERDICTS_TOPIC_PATTERN,
)

#: The prefix of every environment variable the bridge reads.
BRIDGE_ENV_PREFIX = f"{ENV_PREFIX}BRIDGE_"


class BridgeSettings(KafkaSettings, LogSettings):
    """Configuration of one bridge process: Kafka in, OPC UA (and MQTT) out, the deadlines.

    How it reaches the brokers and logs is the plane blocks' (`planes.settings`),
    read from `KENPIN_BRIDGE_*` first, else the plant-wide `KENPIN_*`.
    """

    model_config = SettingsConfigDict(env_prefix=BRIDGE_ENV_PREFIX, extra="ignore")

    # --- Kafka: what the bridge reads (how it reaches the brokers: KafkaSettings) -----
    frames_topic_pattern: str = Field(
        default=FRAMES_TOPIC_PATTERN,
        description="Regex of the frame topics: a frame seen starts its part's deadline "
        "(read only for lines without a parts topic).",
    )
    parts_topic_pattern: str = Field(
        default=PARTS_TOPIC_PATTERN,
        description="Regex of the parts topics, where cameras announce each part with the "
        "frame's headers and no image: a line that has one is read there, its frames never.",
    )
    verdicts_topic_pattern: str = Field(
        default=VERDICTS_TOPIC_PATTERN, description="Regex of the verdict topics."
    )
    deadletter_topic: str = DEADLETTER_TOPIC
    metadata_max_age_ms: int = Field(
        default=5_000,
        ge=100,
        description="How often the broker's topic list is read: bounds how late a new line "
        "is noticed.",
    )

    # --- the decision ----------------------------------------------------------------
    deadline_ms: float = Field(
        default=500.0,
        gt=0,
        description="A part gets TIMEOUT when no verdict or dead letter came within this many "
        "milliseconds of its capture (or of the bridge reading its frame: deadline_from).",
    )
    deadline_from: Literal["capture", "seen"] = Field(
        default="capture",
        description="capture: TIMEOUT at the frame's capture time + the deadline, on the "
        "bridge's wall clock (camera and bridge clocks synchronised, NTP or PTP); seen: from "
        "when the bridge read the frame, on its monotonic clock (clocks not synchronised).",
    )
    line_deadlines_ms: dict[str, float] = Field(
        default_factory=dict,
        description='Per-line deadlines overriding deadline_ms, JSON: {"l1": 800}.',
    )
    lines: list[str] = Field(
        default_factory=list,
        description='Lines whose OPC UA objects exist from the start, JSON: ["l1", "l2"] '
        "(others appear when their first frame or verdict does).",
    )
    dedup_frames: int = Field(
        default=100_000,
        ge=100,
        description="How many decided frame ids are remembered to drop replays and late "
        "verdicts (oldest forgotten first).",
    )

    # --- OPC UA ------------------------------------------------------------------------
    opcua_endpoint: str = Field(
        default="opc.tcp://0.0.0.0:4840/kenpin/", description="Where the server listens."
    )
    opcua_application_uri: str = Field(
        default=OPCUA_APPLICATION_URI,
        description="The server's application URI; its certificate must name the same.",
    )
    opcua_namespace_uri: str = Field(
        default=OPCUA_NAMESPACE_URI, description="Namespace of kenpin's nodes (index 2)."
    )
    opcua_certificate: Path | None = Field(
        default=None, description="The server's certificate (DER or PEM) for Basic256Sha256."
    )
    opcua_private_key: Path | None = Field(
        default=None, description="The server certificate's private key (PEM)."
    )
    opcua_trusted_clients: DirectoryPath | None = Field(
        default=None,
        description="Folder of the client certificates allowed to connect (.der / .pem); unset: "
        "any client certificate may open an encrypted channel, the password decides.",
    )
    opcua_allow_unencrypted: bool = Field(
        default=False,
        description="Also offer an endpoint without security (a closed cell network, or "
        "no certificate): anyone on the network can read the values there.",
    )
    opcua_user: str = Field(default="plc", min_length=1, description="User name of the PLC.")
    opcua_password: SecretStr = Field(
        default=SecretStr(""), description="Its password; empty: no user can log in."
    )
    opcua_allow_anonymous: bool = Field(
        default=False, description="Let clients connect without user name and password."
    )

    # --- MQTT --------------------------------------------------------------------------
    mqtt_url: str | None = Field(
        default=None,
        description="mqtt://host:1883 or mqtts://host:8883: also publish each outcome "
        "there (QoS 1, retained) on kenpin/<line>/verdict; unset: no MQTT.",
    )
    mqtt_username: str | None = None
    mqtt_password: SecretStr = SecretStr("")
    mqtt_ca_file: Path | None = Field(
        default=None, description="CA bundle for mqtts:// (default: the system's CAs)."
    )
    mqtt_topic_prefix: str = MQTT_TOPIC_PREFIX
    mqtt_client_id: str = Field(default="kenpin-bridge", min_length=1)

    def deadline_s(self, line: str) -> float:
        """The line's deadline in seconds."""
        return self.line_deadlines_ms.get(line, self.deadline_ms) / 1000.0

    @field_validator("frames_topic_pattern", "verdicts_topic_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("line_deadlines_ms")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {line: ms for line, ms in value.items() if not ms > 0}
        if bad:
            raise ValueError(f"deadlines must be > 0 ms: {bad}")
        return value

    @field_validator("lines")
    @classmethod
    def _line_names(cls, value: list[str]) -> list[str]:
        bad = [line for line in value if not re.fullmatch(NAME_PATTERN, line)]
        if bad:
            raise ValueError(f"not line names: {bad}")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("mqtt", "mqtts"):
            raise ValueError("give mqtt://host:port or mqtts://host:port")
        return value

    @model_validator(mode="after")
    def _files_in_pairs(self) -> Self:
        if (self.opcua_certificate is None) != (self.opcua_private_key is None):
            raise ValueError("give both opcua_certificate and opcua_private_key, or neither")
        return self

    def check_opcua(self) -> None:
        """Refuse to serve OPC UA nobody can use, or open to anyone without being asked.

        A method, not a validator: `kenpin-bridge mqtt` serves no OPC UA and needs none of it.
        """
        if self.opcua_certificate is None and not self.opcua_allow_unencrypted:
            raise ValueError(
                "no opcua_certificate/opcua_private_key for Basic256Sha256: give them, or set "
                f"{BRIDGE_ENV_PREFIX}OPCUA_ALLOW_UNENCRYPTED=true for a closed network"
            )
        if self.opcua_trusted_clients is not None and not any(
            path.suffix.lower() in (".der", ".pem") for path in self.opcua_trusted_clients.iterdir()
        ):
            raise ValueError(
                f"no client certificate (.der/.pem) in {self.opcua_trusted_clients}: "
                "no client could connect"
            )
        if not self.opcua_password.get_secret_value() and not self.opcua_allow_anonymous:
            raise ValueError(
                f"set {BRIDGE_ENV_PREFIX}OPCUA_PASSWORD (or allow anonymous clients): "
                "otherwise no client can log in"
            )
