"""The S3 contract's keys (`schemas.object_layout`): what is written is what is read back."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas import object_layout as layout

CAPTURED = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))  # 2 March, UTC


def test_release_keys():
    assert layout.release_prefix("v7") == "models/v7"
    assert layout.release_key("v7", layout.MANIFEST_FILE) == "models/v7/manifest.json"
    assert layout.releases_prefix() == "models/"


def test_dated_keys_read_back_into_their_parts():
    normal = layout.normal_key("washer", CAPTURED, "f1", "image/png")
    heatmap = layout.heatmap_key("l1", CAPTURED, "f1")
    original = layout.frame_key("l1", CAPTURED, "f1", "image/jpeg")
    assert normal == "normals/washer/2026-03-02/f1.png"
    assert original == "heatmaps/l1/2026-03-02/f1.original.jpg"
    assert layout.parse_dated_key(normal) == ("normals", "washer", "2026-03-02", "f1.png")
    assert layout.parse_dated_key(heatmap) == ("heatmaps", "l1", "2026-03-02", "f1.png")
    assert normal.startswith(layout.normals_prefix())
    assert original.startswith(layout.heatmaps_prefix("l1"))
    assert layout.parse_dated_key("normals/washer/f1.png") is None


def test_a_date_needs_a_time_zone():
    with pytest.raises(ValueError, match="timezone"):
        layout.normal_key("p", datetime(2026, 1, 1), "f", "image/png")
    assert layout.heatmap_key("l", datetime(2026, 1, 1, tzinfo=UTC), "f").endswith("01/f.png")
