"""`PlantPlanes` turns the client libraries' failures into the two the pages catch.

No server here: the plant's clients are stand-ins that fail as redis-py and
minio do, and the operations (`operations.normal_store`, the retrain queue) run
for real on them.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest
from minio.error import S3Error
from redis.exceptions import ConnectionError as RedisConnectionError
from urllib3.exceptions import MaxRetryError

from console.plant import ActionRefused, PlaneUnavailable
from console.plant_clients import PlantPlanes


class Store:
    """An empty bucket, or one whose every read fails with `error`."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def list(self, prefix: str) -> list:
        if self.error is not None:
            raise self.error
        return []

    def get(self, key: str) -> bytes:
        raise self.error or _s3_error("NoSuchKey")


class Queue:
    redis = None
    stream = "retrain"

    def outcome(self, request_id: str) -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "failed", "/bucket/key", "rid", "hid")  # type: ignore[arg-type]


def planes(store: Store) -> PlantPlanes:
    return PlantPlanes(SimpleNamespace(control=None, store=store, queue=Queue()))  # type: ignore[arg-type]


def test_redis_not_answering_is_plane_unavailable():
    with pytest.raises(PlaneUnavailable, match="Connection refused") as raised:
        planes(Store()).retrain("1-0")
    assert isinstance(raised.value.__cause__, RedisConnectionError)  # the cause is kept


@pytest.mark.parametrize(
    "error", [_s3_error("InternalError"), MaxRetryError(None, "/", "refused"), OSError("down")]
)
def test_s3_not_answering_is_plane_unavailable(error):
    with pytest.raises(PlaneUnavailable):
        planes(Store(error)).mark_good("f-1", "l1")
    with pytest.raises(PlaneUnavailable):
        planes(Store(error)).heatmap("l1", date(2026, 11, 29), "f-1")


def test_a_frame_without_a_stored_original_is_refused_in_its_own_words():
    with pytest.raises(ActionRefused, match="no stored original of frame 'f-1'"):
        planes(Store()).mark_good("f-1", "l1")


def test_a_missing_picture_is_none_not_an_error():
    assert planes(Store()).heatmap("l1", date(2026, 11, 29), "f-1") is None
    assert planes(Store()).original("l1", date(2026, 11, 29), "f-1") is None
