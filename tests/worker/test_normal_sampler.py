"""Which OK frames become normal samples, and where they are stored."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from schemas.frames import FrameHeaders
from schemas.object_layout import normal_key
from worker.normals import NormalSampler


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key, data, content_type="", metadata=None) -> None:
        self.objects[key] = data


def _headers(i: int, product: str = "bottle") -> FrameHeaders:
    return FrameHeaders(
        frame_id=f"f{i}",
        line="l1",
        camera="c1",
        product=product,
        capture_time=datetime(2024, 5, 1, 23, 59, tzinfo=UTC),
        content_type="image/jpeg",
    )


def test_key_is_dated_by_capture_in_utc():
    assert (
        normal_key("bottle", datetime(2024, 5, 1, 8, tzinfo=UTC), "f1", "image/png")
        == "normals/bottle/2024-05-01/f1.png"
    )


def test_near_threshold_frames_are_never_sampled():
    store = FakeStore()
    sampler = NormalSampler(store, rate=1.0, margin=0.2, rng=random.Random(0))
    assert not sampler.offer(_headers(1), b"x", score=0.85, threshold=1.0)
    assert sampler.offer(_headers(2), b"y", score=0.5, threshold=1.0)
    sampler.close()
    assert store.objects == {"normals/bottle/2024-05-01/f2.jpg": b"y"}


def test_rate_per_product_and_daily_cap():
    store = FakeStore()
    sampler = NormalSampler(store, rate=0.0, rates={"tile": 1.0}, daily_cap=3, rng=random.Random(0))
    kept = [sampler.offer(_headers(i, "tile"), b"t", 0.1, 1.0) for i in range(10)]
    kept += [sampler.offer(_headers(100 + i, "bottle"), b"b", 0.1, 1.0) for i in range(10)]
    sampler.close()
    assert sum(kept) == 3
    assert all(k.startswith("normals/tile/") for k in store.objects)
    cap = sampler.metrics.normals.labels(product="tile", outcome="daily_cap")._value.get()
    assert cap == 7
