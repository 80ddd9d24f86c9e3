"""The control plane: the one module that opens Redis connections.

Redis carries what every process must agree on but that is too small or too
urgent for Kafka or S3 (docs/architecture.md); every key and channel is named in
`schemas.redis_keys`, the contract. This module reads and writes the worker's:

- `kenpin:model:current`: the manifest JSON of the release every worker should serve;
- `kenpin:model:releases`: pub/sub channel announcing a new current release;
- `kenpin:model:last_good`: the manifest JSON of the release a worker last
  verified and served; what a starting worker falls back to when the current
  release is refused (a worker must start serving, not crash-loop);
- `kenpin:model:history` (list, newest first): versions made current, pushed by
  the trainer on publish (`operations.retrain_queue.ReleaseHistory`); a worker reads it
  as its second fallback;
- `kenpin:worker:<id>`: one heartbeat per worker (JSON, with a TTL, so a dead
  worker disappears by itself) saying which release it actually serves;
- `kenpin:scores:<version>:<line>:<product>` and `kenpin:findings:...`: the
  line's own evidence for its thresholds (`schemas.live_scores`): workers add
  their score counts, operators their findings, the console and the trainer read.

Pub/sub is fire-and-forget: a worker that is reconnecting misses the message,
which is why workers also read `kenpin:model:current` periodically. The
current key is the truth; the announcement only makes the swap prompt.

The trainer's keys (the retrain stream, the lock, release history) are built on
`ControlPlane.redis` in `operations.retrain_queue`, so this stays the only place that
opens a connection.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError

from planes.settings import RedisSettings
from schemas.control import WorkerHeartbeat
from schemas.live_scores import PartFinding
from schemas.manifest import ModelManifest
from schemas.redis_keys import (
    CURRENT_KEY,
    HEARTBEAT_PREFIX,
    HISTORY_KEY,
    LAST_GOOD_KEY,
    LIVE_SCORES_PREFIX,
    RELEASES_CHANNEL,
    findings_key,
    heartbeat_key,
    live_scores_key,
)

#: (release version, line, product) -> {hash field: count}
ScoreCounts = dict[tuple[str, str, str], dict[str, int]]


class ControlError(RuntimeError):
    """The control plane holds something kenpin cannot read (e.g. a corrupt manifest)."""


_CREDENTIALS = "KENPIN_REDIS_PASSWORD, or the password in KENPIN_REDIS_URL"


class ControlAccessDenied(ControlError):
    """Redis refused kenpin's credentials or TLS: a configuration error, no retry helps."""


def connect(
    url: str, *, password: str | None = None, tls: bool = False, ca_file: Path | None = None
) -> redis.Redis:
    """A client for `url` (redis[s]://[:password@]host:port/db); connects lazily.

    Short socket timeouts keep a Redis outage from freezing a caller: the worker
    keeps judging with the model it has and retries later. `tls` turns a
    redis:// URL into rediss:// (redis-py takes TLS from the scheme); the
    server's certificate is always verified, against `ca_file` when given.
    """
    if tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    options: dict[str, Any] = {}
    if password:
        options["password"] = password
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        if ca_file is not None:
            options["ssl_ca_certs"] = str(ca_file)
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30, **options
    )


def connect_with(settings: RedisSettings) -> redis.Redis:
    """The client `settings` describe: URL, password, TLS and its CA."""
    return connect(
        settings.redis_url,
        password=settings.redis_password.get_secret_value() or None,
        tls=settings.redis_uses_tls,
        ca_file=settings.redis_ca_file,
    )


class ControlPlane:
    """Typed access to kenpin's keys and channel in one Redis database."""

    def __init__(self, client: redis.Redis, namespace_prefix: str = "") -> None:
        self.redis = client
        # A prefix lets tests (and several plants on one Redis) share a server.
        self.prefix = namespace_prefix
        self.current_key = f"{namespace_prefix}{CURRENT_KEY}"
        self.last_good_key = f"{namespace_prefix}{LAST_GOOD_KEY}"
        self.history_key = f"{namespace_prefix}{HISTORY_KEY}"
        self.channel = f"{namespace_prefix}{RELEASES_CHANNEL}"
        self.heartbeat_prefix = f"{namespace_prefix}{HEARTBEAT_PREFIX}"

    @classmethod
    def from_url(cls, url: str, namespace_prefix: str = "") -> ControlPlane:
        return cls(connect(url), namespace_prefix)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> ControlPlane:
        """The control plane of `settings`: Redis with its password and TLS, the key prefix."""
        return cls(connect_with(settings), settings.control_prefix)

    def check_access(self) -> bool:
        """PING: False when Redis cannot be reached now (an outage kenpin rides out).

        Raises `ControlAccessDenied` when Redis answers but refuses kenpin (wrong
        or missing password, a certificate that does not verify): no retry can
        fix that, so a process should stop at start and say so in one line.
        """
        try:
            self.redis.ping()
        except redis.AuthenticationError as exc:
            raise ControlAccessDenied(
                f"Redis refused the credentials ({_CREDENTIALS}): {exc}"
            ) from exc
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise ControlAccessDenied(f"Redis refused access ({_CREDENTIALS}): {exc}") from exc
            raise
        except redis.ConnectionError as exc:
            if isinstance(exc.__context__, ssl.SSLError) or "SSL" in str(exc):
                raise ControlAccessDenied(f"TLS to Redis failed: {exc}") from exc
            return False
        except redis.TimeoutError:
            return False
        return True

    # --- the current release -------------------------------------------------------

    def current(self) -> ModelManifest | None:
        """The release workers should serve, or None before the first release."""
        raw = self.redis.get(self.current_key)
        if raw is None:
            return None
        try:
            return ModelManifest.model_validate_json(raw)
        except ValidationError as exc:
            raise ControlError(f"{self.current_key} is not a model manifest: {exc}") from exc

    def set_current(self, manifest: ModelManifest) -> None:
        """Make `manifest` the current release and announce it (one round trip)."""
        payload = manifest.model_dump_json()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.current_key, payload)
            pipe.publish(self.channel, payload)
            pipe.execute()

    # --- what to fall back to -------------------------------------------------------

    def last_good(self) -> ModelManifest | None:
        """The release a worker last verified and served; None if none, or unreadable.

        Unreadable is None rather than an error: this is a fallback, read when
        something already went wrong, and the release history comes next.
        """
        raw = self.redis.get(self.last_good_key)
        if raw is None:
            return None
        try:
            return ModelManifest.model_validate_json(raw)
        except ValidationError:
            return None

    def set_last_good(self, manifest: ModelManifest) -> None:
        """Record `manifest` as verified and served (by a worker, once it serves it)."""
        self.redis.set(self.last_good_key, manifest.model_dump_json())

    def history(self) -> list[str]:
        """Versions made current, newest first (the trainer's release history)."""
        return [v.decode() for v in self.redis.lrange(self.history_key, 0, -1)]

    def announce(self, manifest: ModelManifest) -> int:
        """Publish `manifest` on the releases channel; returns how many listeners got it."""
        return int(self.redis.publish(self.channel, manifest.model_dump_json()))

    def announcements(self, timeout_s: float = 1.0) -> Iterator[ModelManifest | None]:
        """Yield each announced manifest, or None every `timeout_s` of silence.

        The Nones let the caller check its stop flag and do periodic work; a
        malformed message is skipped (yielded as None), never fatal.
        """
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel)
        try:
            while True:
                message = pubsub.get_message(timeout=timeout_s)
                if message is None or message.get("type") != "message":
                    yield None
                    continue
                try:
                    yield ModelManifest.model_validate_json(message["data"])
                except ValidationError:
                    yield None
        finally:
            pubsub.close()

    # --- worker heartbeats ---------------------------------------------------------

    def heartbeat(self, beat: WorkerHeartbeat, ttl_s: float) -> None:
        """Store a worker's heartbeat; it vanishes `ttl_s` after the last one."""
        self.redis.set(
            self.key(heartbeat_key(beat.worker_id)),
            beat.model_dump_json(),
            px=max(1, int(ttl_s * 1000)),
        )

    def heartbeats(self) -> list[WorkerHeartbeat]:
        """Every live worker's last heartbeat, sorted by worker id."""
        keys = sorted(self.redis.scan_iter(match=f"{self.heartbeat_prefix}*", count=100))
        beats = []
        for raw in self.redis.mget(keys) if keys else []:
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                beats.append(WorkerHeartbeat.model_validate_json(raw))
            except ValidationError:
                continue
        return sorted(beats, key=lambda b: b.worker_id)

    # --- the line's evidence for its thresholds -----------------------------------

    def add_scores(self, counts: ScoreCounts, ttl_s: float) -> None:
        """Add score counts (HINCRBY, one pipeline): every worker of a line counts into one hash."""
        pipe = self.redis.pipeline(transaction=False)
        for (version, line, product), fields in counts.items():
            key = self.key(live_scores_key(version, line, product))
            for name, count in fields.items():
                pipe.hincrby(key, name, count)
            pipe.expire(key, int(ttl_s))
        pipe.execute()

    def scored_lines(self, version: str) -> list[tuple[str, str]]:
        """(line, product) pairs with score counts under release `version`."""
        prefix = self.key(f"{LIVE_SCORES_PREFIX}{version}:")
        found = set()
        for key in self.redis.scan_iter(match=f"{prefix}*", count=500):
            line, _, product = key.decode().removeprefix(prefix).partition(":")
            if line and product:
                found.add((line, product))
        return sorted(found)

    def score_counts(self, version: str, line: str, product: str) -> dict[str, int]:
        """The hash of `add_scores` for one release, line and product."""
        raw = self.redis.hgetall(self.key(live_scores_key(version, line, product)))
        return {name.decode(): int(count) for name, count in raw.items()}

    def add_finding(self, finding: PartFinding, ttl_s: float) -> None:
        """Record an operator's finding on a flagged part (the latest finding of a frame counts)."""
        key = self.key(findings_key(finding.model_version, finding.line, finding.product))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, finding.frame_id, finding.model_dump_json())
        pipe.expire(key, int(ttl_s))
        pipe.execute()

    def findings(self, version: str, line: str, product: str) -> list[PartFinding]:
        """Operators' findings under `version` on one line and product; unreadable ones skipped."""
        raw = self.redis.hgetall(self.key(findings_key(version, line, product)))
        found = []
        for value in raw.values():
            try:
                found.append(PartFinding.model_validate_json(value))
            except ValidationError:
                continue
        return sorted(found, key=lambda f: f.when)

    # --- small JSON helpers the trainer's keys share -------------------------------

    def get_json(self, key: str) -> Any | None:
        raw = self.redis.get(key)
        return None if raw is None else json.loads(raw)

    def key(self, name: str) -> str:
        """`name` inside this control plane's namespace."""
        return f"{self.prefix}{name}"
