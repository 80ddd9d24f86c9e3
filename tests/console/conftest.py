"""The console on in-process stand-ins for Redis and S3 (the browser test uses the real ones)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from console.app import create_app
from console.live import VerdictHub
from console.plant import ActionRefused, Image
from console.settings import ConsoleSettings
from schemas.control import RetrainOutcome, WorkerHeartbeat
from schemas.object_layout import heatmap_key
from schemas.verdicts import Verdict

PASSWORD = "correct horse battery staple"
CAPTURED = datetime(2026, 11, 29, 8, 30, tzinfo=UTC)


class FakePlanes:
    """Records every action, so a test can assert that a refused request changed nothing.

    Fails as `console.plant_clients.PlantPlanes` does: with the console's own
    exceptions (`ActionRefused`, `PlaneUnavailable`), never a client library's.
    """

    def __init__(self) -> None:
        self.actions: list[tuple] = []
        self.outcomes: dict[str, RetrainOutcome] = {}
        self.entries: list = []
        self.proposals: list = []  # operations.line_calibration.Proposal

    def releases(self) -> list:
        return self.entries

    def activate(self, version: str) -> str:
        self.actions.append(("activate", version))
        if version != "v2":
            raise ActionRefused(f"no release {version!r}")
        return version

    def rollback(self) -> str:
        self.actions.append(("rollback",))
        return "v1"

    def request_retrain(self, reason: str, who: str) -> str:
        self.actions.append(("retrain", reason, who))
        request_id = f"{len(self.actions)}-0"
        self.outcomes[request_id] = RetrainOutcome(
            request_id=request_id, status="queued", updated=datetime.now(UTC)
        )
        return request_id

    def retrain(self, request_id: str) -> RetrainOutcome | None:
        return self.outcomes.get(request_id)

    def recent_retrains(self, count: int) -> list:
        return []

    def heartbeats(self) -> list[WorkerHeartbeat]:
        return [
            WorkerHeartbeat(worker_id="w1", host="h", active_version="v1", time=datetime.now(UTC))
        ]

    def mark_good(self, frame_id: str, line: str) -> str:
        self.actions.append(("mark_good", frame_id, line))
        return f"normals/washer/2026-11-29/{frame_id}.png"

    def record_finding(self, verdict: Verdict, finding: str, who: str) -> None:
        self.actions.append(("finding", verdict.frame_id, finding, who))

    def line_proposals(self, target_rate: float | None) -> list:
        self.actions.append(("proposals", target_rate))
        return list(self.proposals)

    def request_line_threshold(self, line: str, product: str, target_rate: float, who: str) -> str:
        self.actions.append(("line_threshold", line, product, target_rate, who))
        return f"{len(self.actions)}-0"

    def heatmap(self, line: str, day: date, frame_id: str) -> Image | None:
        return Image(b"\x89PNG heatmap", "image/png") if frame_id == "f-ng" else None

    def original(self, line: str, day: date, frame_id: str) -> Image | None:
        return Image(b"\xff\xd8 original", "image/jpeg") if frame_id == "f-ng" else None


def verdict(frame_id: str = "f-ng", result: str = "ng", line: str = "l1") -> Verdict:
    return Verdict(
        frame_id=frame_id,
        line=line,
        camera="cam-1",
        product="washer",
        result=result,
        score=0.9 if result == "ng" else 0.1,
        threshold=0.5,
        model_version="v1",
        heatmap_key=heatmap_key(line, CAPTURED, frame_id) if result == "ng" else None,
        capture_time=CAPTURED,
        decision_time=CAPTURED + timedelta(milliseconds=120),
        latency_ms=120.0,
    )


def console_settings(**overrides) -> ConsoleSettings:
    values = dict(
        password=PASSWORD,
        session_secret="s" * 32,
        trusted_hosts=["testserver"],
        kafka_bootstrap="127.0.0.1:1",
    )
    values.update(overrides)
    return ConsoleSettings(**values)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


class Console:
    """A TestClient on the app, its fake planes and hub, and login helpers."""

    def __init__(self, **overrides) -> None:
        self.planes = FakePlanes()
        self.hub = VerdictHub()
        self.hub.add(verdict())
        self.settings = console_settings(**overrides)
        self.client = TestClient(
            create_app(self.settings, self.planes, self.hub), follow_redirects=False
        )

    def login(self, password: str = PASSWORD, user: str = "operator"):
        token = csrf_of(self.client.get("/login").text)
        return self.client.post(
            "/login", data={"username": user, "password": password, "csrf_token": token}
        )

    def token(self) -> str:
        """The logged-in session's CSRF token, read from a page as a browser would."""
        return csrf_of(self.client.get("/retrain").text)


@pytest.fixture
def console() -> Console:
    return Console()
