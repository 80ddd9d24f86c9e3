"""In-process stand-ins shared by the worker's unit tests (integration tests never use them)."""

from __future__ import annotations

from schemas.manifest import ModelManifest


class FakeStore:
    """An ObjectStore in memory: put and get by key."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str = "", metadata=None) -> None:
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        return self.objects[key]


class FakeControl:
    """The control plane's start-up reads; `None` values stand for keys never written."""

    def __init__(self, current=None, last_good=None, history=()) -> None:
        self._current = current
        self._last_good = last_good
        self._history = list(history)
        self.beats: list = []

    def current(self) -> ModelManifest | None:
        return self._current

    def last_good(self) -> ModelManifest | None:
        return self._last_good

    def set_last_good(self, manifest: ModelManifest) -> None:
        self._last_good = manifest

    def history(self) -> list[str]:
        return list(self._history)

    def heartbeat(self, beat, ttl_s) -> None:
        self.beats.append(beat)
