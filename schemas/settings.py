"""What every kenpin process reads from its environment, declared once.

`PlaneSettings` is the base of `worker.settings.WorkerSettings` and
`trainer.service.settings.TrainerSettings`: the `KENPIN_` prefix, where the control plane
(Redis) and the blobs (S3) are, where the process computes and how it logs.

`settings_env` is the way back, for whoever starts a kenpin process (the local
stack, the demo, the benchmarks, the tests): settings, or a few fields of a
settings class, as the `KENPIN_*` variables that process reads. Nobody writes a
`KENPIN_` name by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The prefix of every environment variable kenpin reads.
ENV_PREFIX = "KENPIN_"

#: Where a process computes; "auto": CUDA when present, else the CPU.
Device = Literal["auto", "cpu", "cuda"]

#: Inference precision of the served network.
Precision = Literal["fp32", "bf16", "fp16"]


class PlaneSettings(BaseSettings):
    """The settings every kenpin process shares: Redis, S3, the device, logging."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- control plane: Redis ----------------------------------------------------
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

    # --- blobs: S3 ---------------------------------------------------------------
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

    # --- compute -----------------------------------------------------------------
    device: Device = Field(
        default="auto",
        description="Where the model runs (inference in a worker, training in the trainer); "
        "auto: CUDA when present, else the CPU.",
    )
    precision: Precision = Field(
        default="fp32", description="Numeric precision of inference (autocast for bf16/fp16)."
    )

    # --- operations --------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a terminal, JSON lines otherwise."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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


def env_name(field: str) -> str:
    """The environment variable of a settings field: `s3_bucket` -> `KENPIN_S3_BUCKET`."""
    return f"{ENV_PREFIX}{field.upper()}"


def settings_env(
    settings: BaseSettings | Mapping[str, Any], model: type[BaseSettings] | None = None
) -> dict[str, str]:
    """Settings as the `KENPIN_*` variables a process reads back into the same values.

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
        env[env_name(name)] = text
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


def settings_problems(exc: ValidationError) -> str:
    """A settings error in one line, by environment variable: what a CLI prints at start.

    pydantic's own message spans lines and names fields, not the variables an
    operator sets.
    """
    problems = []
    for error in exc.errors():
        where = env_name(str(error["loc"][0])) if error["loc"] else "settings"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
