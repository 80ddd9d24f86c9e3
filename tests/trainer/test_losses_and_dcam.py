import pytest
import torch

from trainer.learning.dcam import DCAM
from trainer.learning.losses import (
    LossWeights,
    channel_cosine_distance,
    channel_kl,
    distillation_loss,
    spatial_cosine_distance,
    spatial_kl,
)


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 8, 5, 5, generator=g), torch.randn(2, 8, 5, 5, generator=g)


def test_every_loss_is_zero_for_identical_maps(pair):
    t, _ = pair
    for loss in (
        channel_cosine_distance(t, t),
        spatial_cosine_distance(t, t),
        spatial_kl(t, t, 2.0),
        channel_kl(t, t, 2.0),
    ):
        assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_cosine_distances_are_scale_invariant(pair):
    t, s = pair
    assert channel_cosine_distance(t, s) == pytest.approx(float(channel_cosine_distance(t, 3 * s)))
    assert spatial_cosine_distance(t, s) == pytest.approx(float(spatial_cosine_distance(t, 3 * s)))


def test_spatial_kl_matches_torch_kl_div(pair):
    t, s = pair
    temperature = 2.0
    p_t = torch.softmax(t.flatten(2) / temperature, dim=2)
    log_p_s = torch.log_softmax(s.flatten(2) / temperature, dim=2)
    reference = torch.nn.functional.kl_div(log_p_s, p_t, reduction="none").sum(2).sum(1).mean()
    assert float(spatial_kl(t, s, temperature)) == pytest.approx(
        float(reference) * temperature**2, rel=1e-5
    )


def test_weights_select_terms(pair):
    t, s = pair
    _, terms = distillation_loss([t], [s], LossWeights(channel_cd=1, spatial_kd=0))
    assert set(terms) == {"channel_cd"}
    _, terms = distillation_loss([t], [s], LossWeights())
    assert set(terms) == {"channel_cd", "spatial_kd"}  # the paper's best mix is the default
    with pytest.raises(ValueError):
        distillation_loss([t], [s], LossWeights(channel_cd=0, spatial_kd=0))


@pytest.mark.parametrize("kind", ["none", "channel", "spatial", "both"])
def test_dcam_keeps_shapes_and_trains(kind):
    maps = [torch.randn(2, c, 8, 8, requires_grad=True) for c in (24, 40, 112)]
    dcam = DCAM(kind, [24, 40, 112])
    out = dcam(maps)
    assert [o.shape for o in out] == [m.shape for m in maps]
    sum(o.sum() for o in out).backward()
    if kind != "none":
        assert all(p.grad is not None for p in dcam.parameters())


def test_channel_attention_scales_channels_not_pixels():
    dcam = DCAM("channel", [4])
    x = torch.ones(1, 4, 3, 3)
    y = dcam([x])[0]
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y))  # same factor at every pixel
