"""The trainer's keys on the control plane: the retrain stream, outcomes, the lock, history.

Built on `worker.control.ControlPlane` (the one module that opens Redis):

- `kenpin:retrain` (stream): one entry per request (who, why, when). Trainers
  read it as the consumer group `kenpin-trainers`, so each request is run by
  one trainer, and a request taken by a trainer that died is claimed again.
- `kenpin:retrain:outcome:<id>`: the request's outcome as JSON, updated at
  every stage, so `kenpin-trainer retrain-status <id>` can follow a run.
- `kenpin:trainer:lock`: one training at a time across all trainers. A random
  token with an expiry, renewed while training; only its owner may renew or
  release it (compare-and-set in Lua).
- `kenpin:model:history` (list, newest first): versions made current, for rollback.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

import redis

from schemas.common import utc_now
from schemas.control import RetrainOutcome, RetrainRequest
from worker.control import ControlPlane

RETRAIN_STREAM = "kenpin:retrain"
OUTCOME_PREFIX = "kenpin:retrain:outcome:"
TRAINER_GROUP = "kenpin-trainers"
LOCK_KEY = "kenpin:trainer:lock"
HISTORY_KEY = "kenpin:model:history"
SCHEDULE_PREFIX = "kenpin:trainer:schedule:"

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class QueuedRequest:
    request_id: str
    request: RetrainRequest


class RetrainQueue:
    """Retrain requests in, outcomes out."""

    def __init__(self, control: ControlPlane, outcome_ttl_s: float = 30 * 86400) -> None:
        self.control = control
        self.redis = control.redis
        self.stream = control.key(RETRAIN_STREAM)
        self.outcome_ttl_ms = int(outcome_ttl_s * 1000)

    def request(self, reason: str, who: str) -> str:
        """Add a request; returns its id (the stream entry id), already marked queued."""
        entry = RetrainRequest(who=who, reason=reason, when=utc_now())
        request_id = self.redis.xadd(self.stream, {"request": entry.model_dump_json()}).decode()
        self.record(RetrainOutcome(request_id=request_id, status="queued", updated=utc_now()))
        return request_id

    def request_once(self, slot: str, reason: str, who: str) -> str | None:
        """A request unless one was already made for `slot` (schedules of several trainers)."""
        marker = self.control.key(f"{SCHEDULE_PREFIX}{slot}")
        if not self.redis.set(marker, who, nx=True, px=self.outcome_ttl_ms):
            return None
        return self.request(reason, who)

    def _ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, TRAINER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def next(self, consumer: str, block_ms: int, claim_idle_ms: int) -> QueuedRequest | None:
        """The next request for this trainer: one abandoned by a dead trainer, else a new one."""
        self._ensure_group()
        _, claimed, *_ = self.redis.xautoclaim(
            self.stream, TRAINER_GROUP, consumer, min_idle_time=claim_idle_ms, count=1
        )
        entries = claimed
        if not entries:
            answer = self.redis.xreadgroup(
                TRAINER_GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms
            )
            entries = answer[0][1] if answer else []
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream meanwhile
                self.ack(entry_id.decode())
                continue
            request = RetrainRequest.model_validate_json(fields[b"request"])
            return QueuedRequest(entry_id.decode(), request)
        return None

    def ack(self, request_id: str) -> None:
        self.redis.xack(self.stream, TRAINER_GROUP, request_id)

    def touch(self, request_id: str, consumer: str) -> None:
        """Keep a long run's request claimed by this trainer (resets its idle time)."""
        self.redis.xclaim(self.stream, TRAINER_GROUP, consumer, 0, [request_id], justid=True)

    def record(self, outcome: RetrainOutcome) -> None:
        self.redis.set(
            self.control.key(f"{OUTCOME_PREFIX}{outcome.request_id}"),
            outcome.model_dump_json(),
            px=self.outcome_ttl_ms,
        )

    def outcome(self, request_id: str) -> RetrainOutcome | None:
        raw = self.redis.get(self.control.key(f"{OUTCOME_PREFIX}{request_id}"))
        return None if raw is None else RetrainOutcome.model_validate_json(raw)


class LockLost(RuntimeError):
    """The training lock expired or was taken: another trainer may be training."""


class TrainerLock:
    """One training at a time across all trainers: a Redis key with a token and an expiry.

    Use as a context manager after `acquire()` succeeded; a daemon thread renews
    the expiry every third of the TTL until the block ends.
    """

    def __init__(self, control: ControlPlane, owner: str, ttl_s: float) -> None:
        self.redis = control.redis
        self.key = control.key(LOCK_KEY)
        self.owner = owner
        self.ttl_ms = max(100, int(ttl_s * 1000))
        self.token = f"{owner}:{secrets.token_hex(8)}"
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()

    def acquire(self) -> bool:
        """Take the lock if free; starts the renewal thread."""
        if not self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._stop.clear()
        self.lost.clear()
        self._thread = threading.Thread(target=self._keep, name="trainer-lock", daemon=True)
        self._thread.start()
        return True

    def holder(self) -> str | None:
        raw = self.redis.get(self.key)
        return None if raw is None else raw.decode()

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
                    self.lost.set()
                    return
            except redis.RedisError:
                continue  # try again; the TTL leaves two more chances

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release(keys=[self.key], args=[self.token])

    def __enter__(self) -> TrainerLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class ReleaseHistory:
    """Versions made current, newest first: what `release rollback` goes back through."""

    def __init__(self, control: ControlPlane) -> None:
        self.redis = control.redis
        self.key = control.key(HISTORY_KEY)

    def push(self, version: str) -> None:
        self.redis.lpush(self.key, version)
        self.redis.ltrim(self.key, 0, 999)

    def versions(self) -> list[str]:
        return [v.decode() for v in self.redis.lrange(self.key, 0, -1)]

    def drop_newest(self, count: int) -> None:
        self.redis.ltrim(self.key, count, -1)
