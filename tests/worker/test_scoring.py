"""The scoring a release ships: scales, local feature averaging, top-k image score."""

import json

import pytest
import torch
from pydantic import ValidationError

from model.anomaly_map import anomaly_map, image_scores
from schemas.manifest import ModelManifest, Scoring


def _pyramids(n: int = 2):
    torch.manual_seed(0)
    teacher = [torch.randn(n, 4, 16, 16), torch.randn(n, 4, 8, 8), torch.randn(n, 4, 4, 4)]
    student = [f + 0.1 * torch.randn_like(f) for f in teacher]
    return teacher, student


def test_default_scoring_is_the_published_method():
    teacher, student = _pyramids()
    default = anomaly_map(teacher, student, (32, 32), sigma=0)
    explicit = anomaly_map(teacher, student, (32, 32), sigma=0, scoring=Scoring(scales=(0, 1, 2)))
    assert torch.equal(default, explicit)
    assert torch.equal(image_scores(default), default.flatten(1).amax(1))


def test_a_scale_left_out_does_not_count():
    teacher, student = _pyramids()
    student[0] = -teacher[0]  # stride 4 disagrees everywhere
    with_fine = anomaly_map(teacher, student, (32, 32), sigma=0)
    without = anomaly_map(teacher, student, (32, 32), sigma=0, scoring=Scoring(scales=(1, 2)))
    assert (with_fine - without).min() > 1.5


def test_feature_pooling_keeps_the_map_size_and_smooths_a_one_pixel_outlier():
    teacher, student = _pyramids(1)
    student = [t.clone() for t in teacher]
    student[2][0, :, 2, 2] = -teacher[2][0, :, 2, 2]
    plain = anomaly_map(teacher, student, (4, 4), sigma=0, scoring=Scoring(scales=(2,)))
    pooled = anomaly_map(
        teacher, student, (4, 4), sigma=0, scoring=Scoring(scales=(2,), feature_pool=3)
    )
    assert plain.shape == pooled.shape == (1, 4, 4)
    assert pooled.max() < plain.max()


def test_top_fraction_is_the_mean_of_the_largest_values():
    maps = torch.arange(100, dtype=torch.float32).view(1, 10, 10)
    assert image_scores(maps, Scoring(top_fraction=0.05)).item() == pytest.approx(97.0)


@pytest.mark.parametrize(
    "bad", [{"feature_pool": 2}, {"scales": ()}, {"scales": (1, 1)}, {"top_fraction": 1.0}]
)
def test_invalid_scoring_is_refused(bad):
    with pytest.raises(ValidationError):
        Scoring(**bad)


def test_a_manifest_without_scoring_loads_with_the_published_defaults():
    manifest = {
        "version": "old-1",
        "created": "2026-01-01T00:00:00Z",
        "backbone": "efficientnet_lite0",
        "image_size": 256,
        "normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "sha256": "0" * 64,
        "products": {"bottle": {"threshold": 1.0, "rule": "q99", "normal_scores": 10}},
    }
    loaded = ModelManifest.model_validate_json(json.dumps(manifest))
    assert loaded.scoring == Scoring()


def test_plus_unpooled_adds_the_plain_map_to_the_pooled_one():
    """Interpolation and smoothing are linear: the map is the sum of the two maps."""
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 8, 16, 16, generator=gen) for _ in range(3)]
    student = [torch.randn(2, 8, 16, 16, generator=gen) for _ in range(3)]

    def map_of(scoring: Scoring) -> torch.Tensor:
        return anomaly_map(teacher, student, (64, 64), 4.0, scoring)

    plain, pooled = Scoring(scales=(2,)), Scoring(scales=(2,), feature_pool=3)
    both = Scoring(scales=(2,), feature_pool=3, plus_unpooled=True)
    torch.testing.assert_close(map_of(both), map_of(plain) + map_of(pooled))
    assert both.label == "s2 pool3+1 max"
