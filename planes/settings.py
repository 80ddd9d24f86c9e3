"""How kenpin processes read their settings, and the planes' connection settings, declared once.

Every process's settings class derives from `KenpinSettings` and mixes in the
blocks of the planes it reaches:

- `KafkaSettings`: where the brokers are and how to reach them (TLS, SASL), the
  largest record; the worker, the console and the PLC bridge;
- `RedisSettings`: the control plane (releases, retrain requests, heartbeats);
- `S3Settings`: the bucket of releases, heatmaps and normal images;
- `LogSettings`: JSON lines or console text, and the level.

One rule for plant-wide names: a field of a plane block is read from the
process's own variable first (`KENPIN_BRIDGE_KAFKA_BOOTSTRAP` for the bridge),
else from the plant-wide one every process shares (`KENPIN_KAFKA_BOOTSTRAP`),
so `eval "$(kenpin-stack env)"` configures every process alike and a bridge in
another network zone can still be pointed elsewhere.

`settings_env` is the way back, for whoever starts a kenpin process (the local
stack, the demo, the benchmarks, the tests): settings, or a few fields of a
settings class, as the variables that process reads. Nobody writes a `KENPIN_`
name by hand. `settings_problems` is the one line a command prints when its
settings do not validate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: The prefix of every environment variable kenpin reads.
ENV_PREFIX = "KENPIN_"

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class KenpinSettings(BaseSettings):
    """The base of every process's settings: its own prefix, then the plant-wide names.

    A subclass sets its own `env_prefix` (default `KENPIN_`); the fields of the
    plane blocks it mixes in (classes that set `plane_block = True` in their own
    body), and those it names in `plant_wide_extra`, fall back to their `KENPIN_`
    variable.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    #: Fields besides the plane blocks' that a process reads by their plant-wide name too.
    plant_wide_extra: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def plant_wide_fields(cls) -> frozenset[str]:
        """The fields read from `KENPIN_<FIELD>` when the process's own variable is unset."""
        shared = {
            name
            for block in cls.__mro__
            if block.__dict__.get("plane_block") is True
            for name in block.__dict__.get("__annotations__", {})
            if name in cls.model_fields
        }
        return frozenset(shared | cls.plant_wide_extra)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _PlantWideSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )


class _PlantWideSource(EnvSettingsSource):
    """The plant-wide `KENPIN_<FIELD>` variables of the shared fields (nothing else)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls, env_prefix=ENV_PREFIX)
        self.shared = (
            settings_cls.plant_wide_fields()
            if issubclass(settings_cls, KenpinSettings)
            else frozenset()
        )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in self.shared:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class KafkaSettings(KenpinSettings):
    """The data plane: where the brokers are and how every kenpin Kafka client reaches them."""

    plane_block: ClassVar[bool] = True

    kafka_bootstrap: str = Field(
        default="localhost:9092", description="Comma-separated host:port list of brokers."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every Kafka client (consumer, producer, admin) reaches the brokers.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism; required with SASL_PLAINTEXT / SASL_SSL."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: FilePath | None = Field(
        default=None,
        description="PEM bundle of the CA(s) of the brokers' certificates (SSL / SASL_SSL); "
        "default: the system's CAs.",
    )
    kafka_ssl_certfile: FilePath | None = Field(
        default=None, description="Client certificate (PEM), for brokers that require mTLS."
    )
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None, description="Private key of kafka_ssl_certfile (PEM, unencrypted)."
    )
    kafka_max_message_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest record produced and fetched per partition; full-resolution PNG "
        "frames exceed Kafka's 1 MB default. The broker's message.max.bytes must be at least "
        "this.",
    )

    kafka_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=500,
        description="How long the broker may hold a consumer's fetch that has nothing yet: "
        "a new frame or verdict waits up to this behind a fetch in flight (kafka-python's "
        "default, 500 ms, is most of a PLC's deadline). Lower costs the broker more requests.",
    )

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Self:
        # A half-configured client fails at its first connection with a vague
        # network error; say what is missing at start instead.
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_mechanism
            and self.kafka_sasl_username
            and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol} needs "
                "kafka_sasl_mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512), "
                "kafka_sasl_username and kafka_sasl_password"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        return self


class RedisSettings(KenpinSettings):
    """The control plane: Redis (releases, retrain requests, heartbeats)."""

    plane_block: ClassVar[bool] = True

    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis of the control plane: releases, retrain requests, heartbeats.",
    )
    control_prefix: str = Field(
        default="", description="Prefix of every kenpin Redis key (several plants on one Redis)."
    )
    redis_password: SecretStr = Field(
        default=SecretStr(""),
        description="Password of Redis (AUTH / requirepass); empty: none, or the one in "
        "redis_url. Give it in one place only.",
    )
    redis_tls: bool = Field(
        default=False,
        description="Reach Redis over TLS (as a rediss:// URL does); the server's certificate "
        "is verified against redis_ca_file, else the system's CAs.",
    )
    redis_ca_file: FilePath | None = Field(
        default=None, description="PEM bundle of the CA(s) that signed Redis's certificate."
    )

    @model_validator(mode="after")
    def _redis_password_once(self) -> Self:
        # Two passwords would leave which one is used to the client library's precedence.
        if self.redis_password.get_secret_value() and urlsplit(self.redis_url).password:
            raise ValueError(
                f"redis_url holds a password and {ENV_PREFIX}REDIS_PASSWORD is set: give one"
            )
        return self

    @property
    def redis_uses_tls(self) -> bool:
        """TLS to Redis: asked for by the setting or by a rediss:// URL."""
        return self.redis_tls or self.redis_url.startswith("rediss://")


class S3Settings(KenpinSettings):
    """The blobs: the S3 bucket of releases, heatmaps, frames and normal images."""

    plane_block: ClassVar[bool] = True

    s3_endpoint: str = Field(default="localhost:9000", description="host:port, no scheme.")
    s3_access_key: SecretStr = Field(default=SecretStr(""), description="Empty: anonymous.")
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "kenpin"
    s3_secure: bool = Field(default=False, description="Use HTTPS to reach S3.")
    s3_ca_file: FilePath | None = Field(
        default=None,
        description="PEM bundle of the CA(s) that signed the S3 server's certificate "
        "(with s3_secure); default: SSL_CERT_FILE, else certifi's bundle.",
    )

    @field_validator("s3_endpoint")
    @classmethod
    def _no_scheme(cls, value: str) -> str:
        # The MinIO client takes host:port and a separate `secure` flag; a URL here
        # would fail later with a confusing error, so say it now.
        if "://" in value:
            raise ValueError(
                f"give host:port without a scheme; set {ENV_PREFIX}S3_SECURE for https"
            )
        return value


class LogSettings(KenpinSettings):
    """How a process logs: JSON lines for the log shipper, readable text on a terminal."""

    plane_block: ClassVar[bool] = True

    log_format: LogFormat = Field(
        default="auto", description="auto: console on a terminal, JSON lines otherwise."
    )
    log_level: LogLevel = "INFO"


class PlaneSettings(RedisSettings, S3Settings, LogSettings):
    """Redis, S3 and logging: what every process that operates the plant reads.

    The base of the worker's and the trainer's settings and all the plant
    operations need (`operations.plant.connect`).
    """


def env_prefix(model: type[BaseSettings]) -> str:
    """The prefix of a settings class's own variables (`KENPIN_`, `KENPIN_BRIDGE_`, ...)."""
    return str(model.model_config.get("env_prefix") or "")


def env_name(field: str, model: type[BaseSettings] | None = None) -> str:
    """The variable of a settings field: `s3_bucket` -> `KENPIN_S3_BUCKET`."""
    return f"{env_prefix(model) if model is not None else ENV_PREFIX}{field.upper()}"


def env_names(model: type[BaseSettings]) -> dict[str, str]:
    """Every variable `model` reads -> its field: its own prefix's, and the plant-wide ones."""
    prefix = env_prefix(model)
    names = {f"{prefix}{field}".upper(): field for field in model.model_fields}
    if issubclass(model, KenpinSettings):
        names |= {env_name(field): field for field in model.plant_wide_fields()}
    return names


def settings_env(
    settings: BaseSettings | Mapping[str, Any], model: type[BaseSettings] | None = None
) -> dict[str, str]:
    """Settings as the variables a process reads back into the same values.

    Either a settings object (every field; None left out), or a mapping of some
    fields with the settings class that declares them (only those fields): the
    values are validated by that class first, so a typo or a bad value fails
    here, not in the process started with them. Secrets are written in clear
    (they are for that process), strings as they are, anything else as JSON
    (`true`, `6000`, `{"bottle": 0.05}`), which is how pydantic-settings reads it.
    """
    if isinstance(settings, BaseSettings):
        if model is not None:
            raise TypeError("give a settings object, or a mapping of fields and its class")
        validated, names = settings, list(type(settings).model_fields)
    else:
        if model is None:
            raise TypeError("a mapping of fields needs the settings class that declares them")
        unknown = sorted(set(settings) - set(model.model_fields))
        if unknown:
            raise ValueError(f"{model.__name__} has no fields {unknown}")
        validated, names = _without_environment(model)(**settings), list(settings)
    dumped = validated.model_dump(mode="json", include=set(names))
    env: dict[str, str] = {}
    for name in names:
        value = getattr(validated, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(dumped[name], str):
            text = dumped[name]
        else:
            text = json.dumps(dumped[name])
        env[env_name(name, type(validated))] = text
    return env


@cache
def _without_environment(model: type[BaseSettings]) -> type[BaseSettings]:
    """`model` validating only what it is given: the caller's own environment (its
    `KENPIN_*` variables) must neither leak into nor break the values it writes."""

    class Given(model):  # type: ignore[misc, valid-type]
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **others):
            return (init_settings,)

    Given.__name__ = Given.__qualname__ = model.__name__
    return Given


def settings_problems(exc: ValidationError, model: type[BaseSettings] | None = None) -> str:
    """A settings error in one line, by environment variable: what a command prints at start.

    pydantic's own message spans lines and names fields, not the variables an
    operator sets. Required variables left unset read `set KENPIN_X, KENPIN_Y`;
    anything else `invalid settings: KENPIN_X: <why>; ...`. `model` gives the
    variables' prefix (default `KENPIN_`).
    """
    missing, problems = [], []
    for error in exc.errors():
        where = env_name(str(error["loc"][0]), model) if error["loc"] else "settings"
        if error["type"] == "missing":
            missing.append(where)
        else:
            problems.append(f"{where}: {error['msg']}")
    parts = [f"invalid settings: {'; '.join(problems)}"] if problems else []
    if missing:
        parts.append("set " + ", ".join(missing))
    return "; ".join(parts)
