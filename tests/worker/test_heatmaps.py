"""Heatmap overlays and their object keys."""

from datetime import UTC, datetime, timedelta, timezone

import cv2
import numpy as np
import pytest

from schemas.object_layout import frame_key, heatmap_key
from worker.heatmaps import render_overlay


def decode_bgr(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_overlay_is_a_png_at_the_frame_size():
    frame = np.full((120, 200, 3), 128, np.uint8)
    amap = np.zeros((32, 32), np.float32)
    image = decode_bgr(render_overlay(frame, amap, vmax=1.0))
    assert image.shape == (120, 200, 3)


def test_hot_region_is_red_and_cold_region_is_blue_where_the_map_says():
    frame = np.zeros((100, 100, 3), np.uint8)
    amap = np.zeros((10, 10), np.float32)
    amap[:, 5:] = 1.0  # right half anomalous
    image = decode_bgr(render_overlay(frame, amap, vmin=0.0, vmax=1.0, alpha=1.0))
    b, _, r = image[50, 90].astype(int)
    assert r > 100 and b < 50  # JET top is dark red
    b, _, r = image[50, 10].astype(int)
    assert b > 100 and r < 50  # JET bottom is dark blue


def test_alpha_zero_returns_the_frame():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image = decode_bgr(render_overlay(frame, np.ones((8, 8), np.float32), alpha=0.0))
    np.testing.assert_array_equal(image[..., ::-1], frame)


def test_flat_and_non_finite_maps_do_not_break_rendering():
    frame = np.zeros((20, 20, 3), np.uint8)
    assert decode_bgr(render_overlay(frame, np.zeros((4, 4), np.float32))).shape == (20, 20, 3)
    amap = np.array([[np.nan, np.inf], [-np.inf, 0.5]], np.float32)
    assert decode_bgr(render_overlay(frame, amap, vmax=1.0)).shape == (20, 20, 3)


def test_leading_unit_dimensions_of_the_map_are_accepted():
    frame = np.zeros((20, 20, 3), np.uint8)
    assert render_overlay(frame, np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize(
    ("frame", "amap", "alpha"),
    [
        (np.zeros((20, 20), np.uint8), np.zeros((4, 4)), 0.5),
        (np.zeros((20, 20, 3), np.float32), np.zeros((4, 4)), 0.5),
        (np.zeros((20, 20, 3), np.uint8), np.zeros((2, 4, 4)), 0.5),
        (np.zeros((20, 20, 3), np.uint8), np.zeros((4, 4)), 1.5),
    ],
)
def test_bad_inputs_are_refused(frame, amap, alpha):
    with pytest.raises(ValueError):
        render_overlay(frame, amap, alpha=alpha)


def test_keys_are_dated_by_capture_time_in_utc():
    # 01:30 in Tokyo is still the previous day in UTC.
    tokyo = timezone(timedelta(hours=9))
    captured = datetime(2024, 5, 2, 1, 30, tzinfo=tokyo)
    assert heatmap_key("l1", captured, "f-1") == "heatmaps/l1/2024-05-01/f-1.png"
    assert (
        frame_key("l1", captured, "f-1", "image/jpeg") == "heatmaps/l1/2024-05-01/f-1.original.jpg"
    )


def test_png_frame_key_does_not_collide_with_its_heatmap():
    captured = datetime(2024, 5, 1, tzinfo=UTC)
    assert frame_key("l1", captured, "f", "image/png") != heatmap_key("l1", captured, "f")


def test_naive_capture_time_is_refused():
    with pytest.raises(ValueError):
        heatmap_key("l1", datetime(2024, 5, 1), "f")
