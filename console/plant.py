"""What the console's pages ask of the control plane and the bucket, and how that can fail.

The pages talk to `ConsolePlanes` (a protocol) so unit tests can hand the app an
in-process stand-in; the real one, on Redis and S3, is
`console.plant_clients.PlantPlanes`. This module imports no client library
(redis, minio, urllib3) and nothing of `operations` at run time: the pages import
it, and the console's web process should not pay for clients only `PlantPlanes`
uses (it imports them when the console connects).

Whatever fails, a `ConsolePlanes` raises one of two exceptions the pages catch:
`ActionRefused` (the operator's request cannot be done: say why, in its words) or
`PlaneUnavailable` (Redis or S3 did not answer: say "try again", never a 500).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import date

    from operations.line_calibration import Proposal
    from operations.releases import ReleaseEntry
    from schemas.control import RetrainOutcome, RetrainRequest, WorkerHeartbeat
    from schemas.live_scores import Finding
    from schemas.verdicts import Verdict


class ActionRefused(Exception):
    """An operator's action that cannot be done (no such release or frame); shown as it says."""


class PlaneUnavailable(Exception):
    """Redis or S3 did not answer (down, unreachable, timed out): the page says to try again."""


@dataclass(frozen=True)
class RetrainEntry:
    """A retrain request as the retrain page lists it."""

    request_id: str
    request: RetrainRequest | None
    outcome: RetrainOutcome | None


@dataclass(frozen=True)
class Image:
    """A stored picture and its media type, served by the console (never an S3 URL)."""

    data: bytes
    content_type: str


class ConsolePlanes(Protocol):
    """The console's view of Redis and S3; every method may raise `PlaneUnavailable`.

    `activate`, `rollback`, `mark_good` and `request_line_threshold` raise
    `ActionRefused` when the request itself cannot be done.
    """

    def releases(self) -> list[ReleaseEntry]: ...
    def activate(self, version: str) -> str: ...
    def rollback(self) -> str: ...
    def request_retrain(self, reason: str, who: str) -> str: ...
    def retrain(self, request_id: str) -> RetrainOutcome | None: ...
    def recent_retrains(self, count: int) -> list[RetrainEntry]: ...
    def heartbeats(self) -> list[WorkerHeartbeat]: ...
    def mark_good(self, frame_id: str, line: str) -> str: ...
    def record_finding(self, verdict: Verdict, finding: Finding, who: str) -> None: ...
    def line_proposals(self, target_rate: float | None) -> list[Proposal]: ...
    def request_line_threshold(
        self, line: str, product: str, target_rate: float, who: str
    ) -> str: ...
    def heatmap(self, line: str, day: date, frame_id: str) -> Image | None: ...
    def original(self, line: str, day: date, frame_id: str) -> Image | None: ...
