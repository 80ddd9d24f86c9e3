"""The trainer's keys on the control plane: the retrain stream, outcomes, the lock, history.

Built on `planes.control.ControlPlane` (the one module that opens Redis); the
keys are named in `schemas.redis_keys`, the contract:

- `kenpin:retrain` (stream): one entry per request (who, why, when). Trainers
  read it as the consumer group `kenpin-trainers`, so each request is run by
  one trainer. The trainer that took a request keeps its claim fresh from a
  background thread for as long as it works on it (`RetrainQueue.lease`): a
  run longer than the claim time is not taken over, while a request whose
  trainer died goes idle and is claimed by another after the claim time.
- `kenpin:retrain:outcome:<id>`: the request's outcome as JSON, updated at
  every stage, so `kenpin-trainer retrain-status <id>` can follow a run.
- `kenpin:trainer:lock`: one training at a time across all trainers: redis-py's
  `Lock` (a token with an expiry; only its owner may renew or release it),
  renewed from a background thread while training.
- `kenpin:model:history` (list, newest first): versions made current, for rollback.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.exceptions import LockError, LockNotOwnedError

from planes.control import ControlPlane
from schemas.common import utc_now
from schemas.control import LineThresholdChange, RetrainOutcome, RetrainRequest
from schemas.redis_keys import (
    HISTORY_KEY,
    LOCK_KEY,
    RETRAIN_STREAM,
    TRAINER_GROUP,
    outcome_key,
    schedule_key,
)

# Renew a trainer's claim on a request only while the trainer still owns it: a plain
# XCLAIM with min-idle 0 would take the request back from a trainer that took it over.
_RENEW_CLAIM = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then
    return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""


@dataclass(frozen=True)
class QueuedRequest:
    request_id: str
    request: RetrainRequest


@dataclass(frozen=True)
class PendingRequest:
    """A request a trainer took and has not acknowledged yet."""

    request_id: str
    trainer: str
    idle_ms: int  # since the trainer last claimed or renewed it


class RetrainQueue:
    """Retrain requests in, outcomes out."""

    def __init__(self, control: ControlPlane, outcome_ttl_s: float = 30 * 86400) -> None:
        self.control = control
        self.redis = control.redis
        self.stream = control.key(RETRAIN_STREAM)
        self.outcome_ttl_ms = int(outcome_ttl_s * 1000)
        self._renew_claim = self.redis.register_script(_RENEW_CLAIM)

    def request(
        self,
        reason: str,
        who: str,
        recipe: dict | None = None,
        line_threshold: LineThresholdChange | None = None,
    ) -> str:
        """Add a request; returns its id (the stream entry id), already marked queued.

        `recipe` overrides the trainer's recipe for this run (keys:
        trainer.learning.config.REQUEST_KEYS); `line_threshold` asks for no training,
        a release of the current weights with one line's own threshold
        (`operations.line_calibration`).
        """
        entry = RetrainRequest(
            who=who,
            reason=reason,
            when=utc_now(),
            recipe=recipe or {},
            line_threshold=line_threshold,
        )
        request_id = self.redis.xadd(self.stream, {"request": entry.model_dump_json()}).decode()
        self.record(RetrainOutcome(request_id=request_id, status="queued", updated=utc_now()))
        return request_id

    def request_once(self, slot: str, reason: str, who: str) -> str | None:
        """A request unless one was already made for `slot` (schedules of several trainers)."""
        marker = self.control.key(schedule_key(slot))
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

    def depth(self) -> int:
        """Requests not yet acknowledged: waiting for a trainer, or being run.

        Redis's consumer-group lag (entries not yet delivered) plus the pending
        entries (delivered, not acknowledged); where Redis cannot say the lag (after
        entries were deleted), the undelivered entries are counted, up to 10 000.
        """
        self._ensure_group()
        for group in self.redis.xinfo_groups(self.stream):
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) != TRAINER_GROUP:
                continue
            lag = group.get("lag")
            if lag is None:
                after = group["last-delivered-id"]
                after = after.decode() if isinstance(after, bytes) else after
                lag = len(self.redis.xrange(self.stream, f"({after}", "+", count=10_000))
            return int(lag) + int(group["pending"])
        return 0

    def ack(self, request_id: str) -> None:
        self.redis.xack(self.stream, TRAINER_GROUP, request_id)

    def renew_claim(self, request_id: str, consumer: str) -> bool:
        """Reset the idle time of `consumer`'s claim on a request; False if it is not its own.

        Atomic (Lua): a request another trainer took over, or one already
        acknowledged, is left alone.
        """
        renewed = self._renew_claim(keys=[self.stream], args=[TRAINER_GROUP, request_id, consumer])
        return bool(renewed)

    def lease(self, request_id: str, consumer: str, claim_idle_ms: int) -> KeepAlive:
        """Keeps `consumer`'s claim on a request fresh until the block ends.

        Renewed three times per claim time, so a trainer that lives keeps its
        request however long the run takes, and two missed renewals (a slow
        Redis) are forgiven. When the trainer dies the renewals stop, and after
        `claim_idle_ms` the request is claimed by another trainer's `next`.
        """
        return KeepAlive(
            f"claim-{request_id}",
            lambda: self.renew_claim(request_id, consumer),
            period_s=claim_idle_ms / 3000,
        )

    def pending(self, count: int = 100) -> list[PendingRequest]:
        """Requests taken but not acknowledged, oldest first: who holds each, idle how long."""
        self._ensure_group()
        return [
            PendingRequest(
                e["message_id"].decode(), e["consumer"].decode(), e["time_since_delivered"]
            )
            for e in self.redis.xpending_range(self.stream, TRAINER_GROUP, "-", "+", count)
        ]

    def record(self, outcome: RetrainOutcome) -> None:
        self.redis.set(
            self.control.key(outcome_key(outcome.request_id)),
            outcome.model_dump_json(),
            px=self.outcome_ttl_ms,
        )

    def outcome(self, request_id: str) -> RetrainOutcome | None:
        raw = self.redis.get(self.control.key(outcome_key(request_id)))
        return None if raw is None else RetrainOutcome.model_validate_json(raw)


class KeepAlive:
    """Calls `renew` every `period_s` from a daemon thread, for as long as the block lasts.

    Why a thread: one training step can run for minutes without returning to
    the service loop, and what shows other trainers that this one is alive must
    not wait for it. `renew` returns False when what it keeps is no longer ours
    (expired, taken over): `lost` is set and renewing stops. A Redis error is
    retried at the next period; the expiry leaves room for two more tries.
    """

    def __init__(self, name: str, renew: Callable[[], bool], period_s: float) -> None:
        self.name = name
        self.renew = renew
        self.period_s = period_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> KeepAlive:
        self._stop.clear()
        self.lost.clear()
        self._thread = threading.Thread(target=self._keep, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _keep(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                if not self.renew():
                    self.lost.set()
                    return
            except redis.RedisError:
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KeepAlive:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class TrainerLock:
    """One training at a time across all trainers: redis-py's `Lock`, renewed while held.

    The token names its owner, so `holder()` tells an operator which trainer
    trains. Use as a context manager after `acquire()` succeeded; a `KeepAlive`
    resets the expiry every third of the TTL until the block ends, so a trainer
    that dies frees the lock within one TTL.
    """

    def __init__(self, control: ControlPlane, owner: str, ttl_s: float) -> None:
        self.redis = control.redis
        self.key = control.key(LOCK_KEY)
        self.owner = owner
        self.ttl_s = max(0.1, ttl_s)
        self.token = f"{owner}:{secrets.token_hex(8)}"
        # thread_local=False: the token must be visible to the renewing thread.
        self._lock = self.redis.lock(self.key, timeout=self.ttl_s, thread_local=False)
        self._keeper = KeepAlive("trainer-lock", self._renew, self.ttl_s / 3)

    @property
    def lost(self) -> threading.Event:
        """Set when the lock expired or was taken: another trainer may be training."""
        return self._keeper.lost

    def acquire(self) -> bool:
        """Take the lock if free, and start renewing it."""
        if not self._lock.acquire(blocking=False, token=self.token):
            return False
        self._keeper.start()
        return True

    def _renew(self) -> bool:
        try:
            return self._lock.reacquire()
        except LockNotOwnedError:
            return False

    def holder(self) -> str | None:
        raw = self.redis.get(self.key)
        return None if raw is None else raw.decode()

    def release(self) -> None:
        self._keeper.stop()
        with contextlib.suppress(LockError):  # expired or taken: nothing of ours to release
            self._lock.release()

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
