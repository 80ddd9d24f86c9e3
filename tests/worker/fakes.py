"""In-process stand-ins shared by the worker's unit tests (integration tests never use them)."""

from __future__ import annotations


class FakeStore:
    """An ObjectStore in memory: put and get by key."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str = "", metadata=None) -> None:
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        return self.objects[key]
