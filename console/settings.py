"""Every knob of `kenpin-console`, read from `KENPIN_CONSOLE_*` environment variables.

The console's own settings carry the `KENPIN_CONSOLE_` prefix; where the planes are
(Redis, S3, the broker) is read from the plant-wide variables every process reads
(`KENPIN_REDIS_URL`, `KENPIN_S3_*`, `KENPIN_KAFKA_*`, `KENPIN_VERDICTS_TOPIC_PREFIX`)
unless a `KENPIN_CONSOLE_` one of the same field is set, so
`eval "$(kenpin-stack env)"` configures the console like every other process.

Security defaults, and why:

- `password` has no default: the console refuses to start without one, because every
  action that changes the line (a release, a retrain, a frame filed as normal) needs a login.
- `session_secret` may be left unset: a random one is drawn at start and a warning says
  that sessions do not survive a restart (operators log in again). Set it when several
  console processes share a host name behind a load balancer.
- `read_only_view` is off: without a login nothing is shown, since heatmaps show the
  plant's parts. A wall display turns it on (it still cannot change anything).
- `host` is loopback: a deployment opts in to `0.0.0.0` and names its `trusted_hosts`.

Example: ``KENPIN_CONSOLE_PASSWORD=... KENPIN_CONSOLE_READ_ONLY_VIEW=true kenpin-console``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from operations.settings import OperationsSettings
from planes.settings import ENV_PREFIX, KafkaSettings
from schemas.topics import VERDICTS_TOPIC_PREFIX

#: The prefix of the console's own variables.
CONSOLE_ENV_PREFIX = f"{ENV_PREFIX}CONSOLE_"


class ConsoleSettings(KafkaSettings, OperationsSettings):
    """Configuration of one `kenpin-console` process (web server, login, live feed).

    Where the planes are is the plane blocks' (`planes.settings`, and the
    operations' `outcome_ttl_s`): `KENPIN_CONSOLE_*` first, else the plant-wide
    `KENPIN_*` every process reads.
    """

    model_config = SettingsConfigDict(env_prefix=CONSOLE_ENV_PREFIX, extra="ignore")
    plant_wide_extra: ClassVar[frozenset[str]] = frozenset({"verdicts_topic_prefix"})

    # --- the web server --------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address to bind; loopback unless a deployment opts in (0.0.0.0).",
    )
    port: int = Field(default=8080, ge=0, le=65535)
    trusted_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost"],
        min_length=1,
        description='Host names the console answers to, JSON: ["console.plant.example"]. '
        "Any other Host header is refused (a DNS-rebinding page cannot read the console).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose forms may post, besides the "
        "console's own host; needed behind a TLS proxy that changes the port.",
    )

    # --- login -----------------------------------------------------------------------
    username: str = Field(default="operator", min_length=1, description="The operator's login.")
    password: SecretStr = Field(
        description="The operator's password; required: the console does not start without."
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs session cookies (32+ random bytes). Unset: a random key "
        "per start, so sessions end when the console restarts.",
    )
    session_max_age_s: int = Field(
        default=12 * 3600, ge=60, description="A login lasts this long (a shift, by default)."
    )
    cookie_secure: bool = Field(
        default=False,
        description="Send the session cookie over HTTPS only; set it when the console is "
        "served over TLS (a reverse proxy).",
    )
    read_only_view: bool = Field(
        default=False,
        description="Show the pages (live verdicts, heatmaps, releases, retrains, workers) "
        "without a login; every action still needs one.",
    )

    # --- the live feed (Kafka; how it reaches the brokers: KafkaSettings) -------------
    verdicts_topic_prefix: str = Field(
        default=VERDICTS_TOPIC_PREFIX,
        description="The workers' verdict topic prefix (KENPIN_VERDICTS_TOPIC_PREFIX).",
    )
    line_prefix: str = Field(
        default="",
        description="Show only the lines whose name starts with this (one console per hall).",
    )
    backfill_per_partition: int = Field(
        default=50,
        ge=0,
        description="Verdicts read back per partition at start, so the page and the NG "
        "gallery are not empty after a restart.",
    )
    recent_per_line: int = Field(default=20, ge=1, description="Verdicts listed per line.")
    gallery_size: int = Field(default=12, ge=1, description="NG frames in the gallery.")
    topic_refresh_s: float = Field(
        default=5.0, gt=0, description="How often the feed looks for a new line's topic."
    )
    keepalive_s: float = Field(
        default=15.0,
        gt=0,
        description="A comment line on idle event streams this often, so proxies keep them.",
    )
