"""What the console reads and changes on the control plane and in the bucket.

Every action is the plant operation the operator commands call (`kenpin-trainer
release activate | rollback`, `retrain`, `retrain-status`, `mark-good`,
`workers`: `operations`), on clients made the same way (`operations.plant.connect`),
so the console and the command line cannot drift apart. The pages talk to
`ConsolePlanes` (a protocol) so unit tests can hand the app an in-process stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

from minio.error import S3Error
from redis.exceptions import RedisError
from urllib3.exceptions import HTTPError

from console.settings import ConsoleSettings
from operations import normal_store, releases
from operations.plant import Plant, connect
from operations.releases import ReleaseEntry, ReleaseError
from schemas.control import RetrainOutcome, RetrainRequest, WorkerHeartbeat
from schemas.frames import EXTENSION_BY_CONTENT_TYPE
from schemas.object_layout import frame_key, heatmap_key

#: Refusals of an operator's action, reported on the page in their own words.
ActionError = (ReleaseError, normal_store.FrameNotFound)
#: Redis or S3 not answering: reported on the page ("try again"), never a server error.
PlaneDown = (RedisError, S3Error, HTTPError, OSError)


@dataclass(frozen=True)
class RetrainEntry:
    """A retrain request as the retrain page lists it."""

    request_id: str
    request: RetrainRequest | None
    outcome: RetrainOutcome | None


@dataclass(frozen=True)
class Image:
    data: bytes
    content_type: str


class ConsolePlanes(Protocol):
    """The console's view of Redis and S3 (`PlantPlanes`; tests pass a stand-in)."""

    def releases(self) -> list[ReleaseEntry]: ...
    def activate(self, version: str) -> str: ...
    def rollback(self) -> str: ...
    def request_retrain(self, reason: str, who: str) -> str: ...
    def retrain(self, request_id: str) -> RetrainOutcome | None: ...
    def recent_retrains(self, count: int) -> list[RetrainEntry]: ...
    def heartbeats(self) -> list[WorkerHeartbeat]: ...
    def mark_good(self, frame_id: str, line: str) -> str: ...
    def heatmap(self, line: str, day: date, frame_id: str) -> Image | None: ...
    def original(self, line: str, day: date, frame_id: str) -> Image | None: ...


class PlantPlanes:
    """`ConsolePlanes` on the real Redis and S3 of the console's settings."""

    def __init__(self, plant: Plant) -> None:
        self.plane = plant
        self.queue = plant.queue

    @classmethod
    def connect(cls, settings: ConsoleSettings) -> PlantPlanes:
        """Both clients of the console's settings, made as the operator commands make them.

        Raises one of `operations.plant.AccessDenied` when Redis or S3 refuses them.
        """
        return cls(connect(settings))

    # --- releases (kenpin-trainer release list | activate | rollback) ----------------------

    def releases(self) -> list[ReleaseEntry]:
        """Every stored release, newest first."""
        return list(reversed(releases.list_releases(self.plane.store, self.plane.control)))

    def activate(self, version: str) -> str:
        return releases.activate(self.plane.store, self.plane.control, version).version

    def rollback(self) -> str:
        return releases.rollback(self.plane.store, self.plane.control).version

    # --- retraining (kenpin-trainer retrain | retrain-status) --------------------------

    def request_retrain(self, reason: str, who: str) -> str:
        return self.queue.request(reason, who)

    def retrain(self, request_id: str) -> RetrainOutcome | None:
        return self.queue.outcome(request_id)

    def recent_retrains(self, count: int) -> list[RetrainEntry]:
        """The newest requests on the retrain stream with their outcomes, newest first."""
        entries = []
        for entry_id, fields in self.queue.redis.xrevrange(self.queue.stream, count=count):
            request_id = entry_id.decode()
            raw = fields.get(b"request")
            request = RetrainRequest.model_validate_json(raw) if raw else None
            entries.append(RetrainEntry(request_id, request, self.queue.outcome(request_id)))
        return entries

    # --- workers (kenpin-trainer workers) ----------------------------------------------

    def heartbeats(self) -> list[WorkerHeartbeat]:
        return self.plane.control.heartbeats()

    # --- the NG gallery (kenpin-trainer mark-good) --------------------------------------

    def mark_good(self, frame_id: str, line: str) -> str:
        return normal_store.mark_good(self.plane.store, frame_id, line=line)

    def heatmap(self, line: str, day: date, frame_id: str) -> Image | None:
        data = self._get(heatmap_key(line, _midnight(day), frame_id))
        return None if data is None else Image(data, "image/png")

    def original(self, line: str, day: date, frame_id: str) -> Image | None:
        """The camera's bytes stored beside the heatmap (the verdict does not say PNG or JPEG)."""
        for content_type in EXTENSION_BY_CONTENT_TYPE:
            data = self._get(frame_key(line, _midnight(day), frame_id, content_type))
            if data is not None:
                return Image(data, content_type)
        return None

    def _get(self, key: str) -> bytes | None:
        try:
            return self.plane.store.get(key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
