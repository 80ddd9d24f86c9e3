"""`PlantPlanes`: the console's `ConsolePlanes` on the real Redis and S3.

Every action is the plant operation the operator commands call (`kenpin-trainer
release activate | rollback`, `retrain`, `retrain-status`, `mark-good`,
`workers`: `operations`), on clients made the same way (`operations.plant.connect`),
so the console and the command line cannot drift apart.

This is the one module of the console that imports the client libraries (redis,
minio, urllib3) and `operations`; `console.cli` imports it when it connects, so
the pages (`console.app`) load without them. The failures of those libraries
become the console's own exceptions here, in one place (`_translated`): a
refused release or frame is `ActionRefused`, a plane that does not answer is
`PlaneUnavailable`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from minio.error import S3Error
from redis.exceptions import RedisError
from urllib3.exceptions import HTTPError

from console.plant import ActionRefused, Image, PlaneUnavailable, RetrainEntry
from operations import line_calibration, normal_store, releases
from operations.plant import Plant, connect
from operations.releases import ReleaseError
from schemas.control import RetrainRequest
from schemas.frames import EXTENSION_BY_CONTENT_TYPE
from schemas.live_scores import PartFinding
from schemas.object_layout import frame_key, heatmap_key

if TYPE_CHECKING:
    from console.settings import ConsoleSettings
    from operations.line_calibration import Proposal
    from operations.releases import ReleaseEntry
    from schemas.control import RetrainOutcome, WorkerHeartbeat
    from schemas.live_scores import Finding
    from schemas.verdicts import Verdict

#: Refusals of an operator's action, reported on the page in their own words.
REFUSED = (ReleaseError, normal_store.FrameNotFound)
#: Redis or S3 not answering: reported on the page ("try again"), never a server error.
UNANSWERED = (RedisError, S3Error, HTTPError, OSError)

P = ParamSpec("P")
R = TypeVar("R")


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """`method`, raising `ActionRefused` / `PlaneUnavailable` instead of the clients' errors."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except REFUSED as exc:
            raise ActionRefused(str(exc)) from exc
        except UNANSWERED as exc:
            raise PlaneUnavailable(str(exc)) from exc

    return call


class PlantPlanes:
    """`ConsolePlanes` on the real Redis and S3 of the console's settings."""

    def __init__(
        self, plant: Plant, evidence_min_normals: int = 300, evidence_ttl_s: float = 30 * 86400
    ) -> None:
        self.plane = plant
        self.queue = plant.queue
        self.evidence_min_normals = evidence_min_normals
        self.evidence_ttl_s = evidence_ttl_s

    @classmethod
    def connect(cls, settings: ConsoleSettings) -> PlantPlanes:
        """Both clients of the console's settings, made as the operator commands make them.

        Raises one of `operations.plant.AccessDenied` when Redis or S3 refuses them.
        """
        return cls(connect(settings), settings.evidence_min_normals, settings.evidence_ttl_s)

    # --- releases (kenpin-trainer release list | activate | rollback) ----------------------

    @_translated
    def releases(self) -> list[ReleaseEntry]:
        """Every stored release, newest first."""
        return list(reversed(releases.list_releases(self.plane.store, self.plane.control)))

    @_translated
    def activate(self, version: str) -> str:
        return releases.activate(self.plane.store, self.plane.control, version).version

    @_translated
    def rollback(self) -> str:
        return releases.rollback(self.plane.store, self.plane.control).version

    # --- retraining (kenpin-trainer retrain | retrain-status) --------------------------

    @_translated
    def request_retrain(self, reason: str, who: str) -> str:
        return self.queue.request(reason, who)

    @_translated
    def retrain(self, request_id: str) -> RetrainOutcome | None:
        return self.queue.outcome(request_id)

    @_translated
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

    @_translated
    def heartbeats(self) -> list[WorkerHeartbeat]:
        return self.plane.control.heartbeats()

    # --- the NG gallery (kenpin-trainer mark-good) --------------------------------------

    @_translated
    def mark_good(self, frame_id: str, line: str) -> str:
        return normal_store.mark_good(self.plane.store, frame_id, line=line)

    @_translated
    def record_finding(self, verdict: Verdict, finding: Finding, who: str) -> None:
        """An operator's finding on a flagged part: evidence for the line's own threshold."""
        self.plane.control.add_finding(
            PartFinding(
                frame_id=verdict.frame_id,
                line=verdict.line,
                product=verdict.product,
                model_version=verdict.model_version,
                score=verdict.score,
                threshold=verdict.threshold,
                finding=finding,
                who=who,
                when=datetime.now(UTC),
            ),
            self.evidence_ttl_s,
        )

    # --- the line's own thresholds (operations.line_calibration) ------------------------

    @_translated
    def line_proposals(self, target_rate: float | None) -> list[Proposal]:
        """Every line and product counted under the serving weights, with a proposal each."""
        control = self.plane.control
        current = control.current()
        if current is None:
            return []
        pairs = {
            pair
            for version in line_calibration.evidence_versions(current)
            for pair in control.scored_lines(version)
            if pair[1] in current.products
        }
        return [
            line_calibration.line_proposal(
                control, current, line, product, target_rate, self.evidence_min_normals
            )
            for line, product in sorted(pairs)
        ]

    @_translated
    def request_line_threshold(self, line: str, product: str, target_rate: float, who: str) -> str:
        current = self.plane.control.current()
        if current is None or product not in current.products:
            raise ActionRefused(f"the current release does not judge {product!r}")
        return line_calibration.request_line_threshold(
            self.queue, current, line, product, target_rate, who
        )

    @_translated
    def heatmap(self, line: str, day: date, frame_id: str) -> Image | None:
        data = self._get(heatmap_key(line, _midnight(day), frame_id))
        return None if data is None else Image(data, "image/png")

    @_translated
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
